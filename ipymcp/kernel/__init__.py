"""The kernel's side of the house: running agent code on the main thread (``mainthread``,
``execute``, ``capture``), following the user's cells and their outputs (``status``, ``history``)
and reading the namespace without running it (``namespace``, ``inspection``, ``static``,
``library``, ``previews``). Nothing here imports the MCP SDK."""
