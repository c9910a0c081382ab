"""``ipymcp connect``: a stdio MCP server that forwards to the HTTP server inside a kernel.

Downstream is a low-level ``Server`` on stdio (it answers both protocol eras); upstream is an
SDK ``Client`` over Streamable HTTP with the kernel's bearer token. The kernel is found through
the runtime files the core writes (``server/discovery.py``), so a client's configuration stays
``ipymcp connect`` while ports and tokens change with every kernel start.

* ``selection``: which kernel (the command line, the documented order, the notebook a proxy
  stays bound to);
* ``upstream``: one SDK ``Client`` to one kernel, in a task of its own;
* ``proxy``: the stdio server, forwarding, reconnecting, list_notebooks / select_notebook.
"""
