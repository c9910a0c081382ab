"""The HTTP side: the listening socket and its thread (``thread``, ``gate``), the checks every
request passes (``security``, ``pipeline``), the MCP app (``app``), runtime files
(``discovery``) and the Jupyter servers on this machine (``jupyter``). Importing a module here
that imports the SDK (``app``, ``pipeline``, ``sdk_compat``) costs ~0.7 s: server thread only."""
