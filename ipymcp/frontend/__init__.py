"""The notebook the user sees: the labextension link (``comm``, speaking ``protocol``) and what
works without it (``fallback``: the activity output, the saved .ipynb, proposals)."""
