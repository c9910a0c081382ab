"""Previews and summaries of library types, through ``library``'s allow-list only.

pandas and numpy values are read with their allow-listed accessors and formatted from plain text
(an object column's elements are shown with ``safe_repr``: pandas and numpy would call their
``repr``); matplotlib figures, ipywidgets and sympy expressions are read from what the objects
store; xarray metadata comes from its variables, and lazy data is never loaded.

Importing this module registers them with ``previews`` (``LIBRARY_SUMMARIES``, ``LIBRARY_PREVIEWS``),
which builds on nothing here: the generic previews never import the library ones.
"""

from __future__ import annotations

from typing import Any

from . import library, previews, static
from .library import PATH
from .previews import bounded_text, plain_text, safe_repr, take

_STATS_MAX_ELEMENTS = 1_000_000
_TABLE_ROWS, _TABLE_COLUMNS = 5, 20
_SYMPY_MAX_NODES = 10_000
_MEMORY_MAX_COLUMNS = 1_000


def _get(value: Any, name: str) -> Any:
    return library.accessor(value, name)


# -- numpy --------------------------------------------------------------------------------------


def _ndarray_summary(array: Any) -> tuple[str, int | None]:
    return f"shape={_get(array, 'shape')} dtype={_get(array, 'dtype')}", int(_get(array, "nbytes"))


def _ndarray_preview(array: Any, max_chars: int) -> dict[str, Any]:
    dtype = _get(array, "dtype")
    size = int(_get(array, "size"))
    info: dict[str, Any] = {"shape": list(_get(array, "shape")), "dtype": str(dtype), "nbytes": int(_get(array, "nbytes"))}
    if size:
        info["first_values"] = _first_values(array, dtype)
    if 0 < size <= _STATS_MAX_ELEMENTS and dtype.kind in "iuf":  # real numbers: JSON has no complex
        errstate = library.trusted_call("numpy", "errstate")
        with errstate(all="ignore"):
            info["stats"] = {key: _number(_get(array, key)()) for key in ("min", "max", "mean")}
    elif size > _STATS_MAX_ELEMENTS:
        info["stats"] = f"skipped: more than {_STATS_MAX_ELEMENTS:,} elements (compute them with execute)"
    return info


def _first_values(array: Any, dtype: Any) -> str:
    first = _get(array, "flat")[:10]  # a copy of ten elements, whatever the layout
    if dtype.hasobject or dtype.kind == "V":
        return "[" + ", ".join(safe_repr(item, 40) for item in take(first, 10)) + "]"
    return library.trusted_call("numpy", "array2string")(first, threshold=20, max_line_width=200)


def _number(value: Any) -> Any:
    if library.is_a(value, "numpy.generic"):
        return _get(value, "item")()
    return value if static.one_of(type(value), (int, float, bool)) else safe_repr(value)


def _numpy_scalar_summary(value: Any) -> tuple[str, int | None]:
    return plain_text(value, 200), None  # numpy.void (a record) may hold objects: plain_text knows


def _numpy_scalar_preview(value: Any, max_chars: int) -> dict[str, Any]:
    return {"value": plain_text(value, max_chars)}


# -- pandas -------------------------------------------------------------------------------------


def _frame_summary(frame: Any) -> tuple[str, int | None]:
    columns = _get(frame, "columns")
    labels = [plain_text(label, 30) for label in _first_labels(columns, 8)]
    more = ", …" if int(_get(columns, "size")) > len(labels) else ""
    return f"shape={_get(frame, 'shape')} columns=[{', '.join(labels)}{more}]", _memory(frame)


def _frame_preview(frame: Any, max_chars: int) -> dict[str, Any]:
    rows, columns = _get(frame, "shape")
    corner = _get(frame, "iloc")[:_TABLE_ROWS, :_TABLE_COLUMNS]
    dtypes = _get(_get(frame, "iloc")[:0, :50], "dtypes")
    info: dict[str, Any] = {
        "shape": [rows, columns],
        "columns": columns,
        "dtypes": {plain_text(k, 60): _dtype_text(v) for k, v in zip(_labels(dtypes), _cells(dtypes), strict=True)},
        "head": bounded_text(_table(corner), max_chars),
        "memory_bytes": _memory(frame),
        "index": static.type_name(_get(frame, "index")),
    }
    if columns > _TABLE_COLUMNS:
        info["head_note"] = f"first {_TABLE_COLUMNS} of {columns} columns"
    return info


def _series_summary(series: Any) -> tuple[str, int | None]:
    return f"len={_get(series, 'size')} dtype={_dtype_text(_get(series, 'dtype'))}", _memory(series)


def _series_preview(series: Any, max_chars: int) -> dict[str, Any]:
    head = _get(series, "head")(10)
    frame_class = library.resolve("pandas.DataFrame")
    text = frame_class({"": [plain_text(v) for v in _cells(head)]}, index=[plain_text(v) for v in _labels(head)])
    return {
        "length": int(_get(series, "size")),
        "dtype": _dtype_text(_get(series, "dtype")),
        "series_name": safe_repr(_get(series, "name")),
        "head": bounded_text(text.to_string(header=False), max_chars),
        "memory_bytes": _memory(series),
    }


def _index_summary(index: Any) -> tuple[str, int | None]:
    return f"len={_get(index, 'size')} dtype={_dtype_text(_get(index, 'dtype'))}", _memory(index)


def _index_preview(index: Any, max_chars: int) -> dict[str, Any]:
    labels = [plain_text(v, 60) for v in _first_labels(index, 20)]
    return {
        "length": int(_get(index, "size")),
        "dtype": _dtype_text(_get(index, "dtype")),
        "first_values": labels,
        "index_name": safe_repr(_get(index, "name")),
        "memory_bytes": _memory(index),
    }


def _table(frame: Any) -> str:
    """The frame's corner as text, every cell and label formatted by us (no element ``repr``)."""
    cells = [[plain_text(cell) for cell in row] for row in _get(frame, "to_numpy")(dtype=object)]
    columns = [plain_text(v) for v in _get(_get(frame, "columns"), "to_numpy")(dtype=object)]
    index = [plain_text(v) for v in _get(_get(frame, "index"), "to_numpy")(dtype=object)]
    frame_class = library.resolve("pandas.DataFrame")
    return frame_class(cells, index=index, columns=columns).to_string()


def _first_labels(index: Any, count: int) -> list:
    """The first labels of an Index as Python objects; only those are converted (a 2M-row index
    stays as it is)."""
    return list(_get(_get(index, "__getitem__")(slice(0, count)), "to_numpy")(dtype=object))


def _labels(series: Any) -> list:
    return _first_labels(_get(series, "index"), 50)


def _cells(series: Any) -> list:
    return list(take(_get(series, "to_numpy")(dtype=object), 50))


def _dtype_text(dtype: Any) -> str:
    return str(dtype) if library.is_scalar(dtype) else safe_repr(dtype, 60)


def _memory(value: Any) -> int | None:
    """Bytes held, without looking into object elements (deep=False); not for very wide frames
    (pandas builds a Series per column: 20,000 columns take seconds)."""
    try:
        if library.is_a(value, "pandas.DataFrame") and _get(value, "shape")[1] > _MEMORY_MAX_COLUMNS:
            return None
        if library.is_a(value, "pandas.Index"):
            return int(_get(value, "memory_usage")(deep=False))
        usage = _get(value, "memory_usage")(index=True, deep=False)
        return int(_get(usage, "sum")()) if library.is_a(value, "pandas.DataFrame") else int(usage)
    except Exception:  # noqa: BLE001 - a size estimate is optional
        return None


# -- torch --------------------------------------------------------------------------------------


def _tensor_summary(tensor: Any) -> tuple[str, int | None]:
    size = int(_get(tensor, "element_size")() * _get(tensor, "nelement")())
    text = f"shape={tuple(_get(tensor, 'shape'))} dtype={_get(tensor, 'dtype')} device={_get(tensor, 'device')}"
    return text, size


def _tensor_preview(tensor: Any, max_chars: int) -> dict[str, Any]:
    device = _get(tensor, "device")
    info = {
        "shape": list(_get(tensor, "shape")),
        "dtype": str(_get(tensor, "dtype")),
        "device": str(device),
        "requires_grad": bool(_get(tensor, "requires_grad")),
    }
    if device.type == "cpu" and _get(tensor, "nelement")():
        info["first_values"] = str(_get(tensor, "detach")().reshape(-1)[:10].tolist())
    return info


# -- matplotlib: read from what the figure stores, nothing is drawn ---------------------------

_ARTIST_KINDS = {
    "lines": "matplotlib.lines.Line2D",
    "collections": "matplotlib.collections.Collection",
    "patches": "matplotlib.patches.Patch",
    "images": "matplotlib.image.AxesImage",
    "texts": "matplotlib.text.Text",
}


def _figure_summary(figure: Any) -> tuple[str, int | None]:
    axes = _figure_axes(figure)
    titles = [t for t in (_axes_title(a) for a in axes[:4]) if t]
    return f"{len(axes)} axes" + (f": {', '.join(repr(t) for t in titles)}" if titles else ""), None


def _figure_preview(figure: Any, max_chars: int) -> dict[str, Any]:
    axes = _figure_axes(figure)
    info: dict[str, Any] = {"axes_count": len(axes)}
    size = _get(figure, "get_size_inches")()
    info["size_inches"] = [round(float(x), 2) for x in take(size, 2)]
    dpi = static.read_stored(figure, "_dpi")
    if static.one_of(type(dpi), (int, float)):
        info["dpi"] = dpi
    suptitle = _text_of(static.read_stored(figure, "_suptitle"))
    if suptitle:
        info["suptitle"] = suptitle
    info["axes"] = [_axes_facts(a) for a in axes[:20]]
    return info


def _axes_summary(axes: Any) -> tuple[str, int | None]:
    facts = _axes_facts(axes)
    counts = ", ".join(f"{k}={facts[k]}" for k in _ARTIST_KINDS if facts.get(k))
    return (f"title={facts['title']!r} " if facts.get("title") else "") + counts, None


def _axes_preview(axes: Any, max_chars: int) -> dict[str, Any]:
    return _axes_facts(axes)


def _figure_axes(figure: Any) -> list:
    axes = library.accessor(figure, "axes", PATH)
    return list(take(list.__iter__(axes), 100)) if static.builtin_base(type(axes)) is list else []


def _axes_facts(axes: Any) -> dict[str, Any]:
    if library.entry_of(type(axes)) != "matplotlib.axes.Axes":
        return {"type": static.type_name(axes), "note": "not a matplotlib Axes class: not read"}
    facts: dict[str, Any] = {"title": _axes_title(axes)}
    for side, attribute in (("xlabel", "xaxis"), ("ylabel", "yaxis")):
        label = _text_of(static.read_stored(static.read_stored(axes, attribute), "label"))
        if label:
            facts[side] = label
    children = _children(axes)
    labels = []
    for kind, entry in _ARTIST_KINDS.items():
        matching = [c for c in children if library.is_a(c, entry)]
        facts[kind] = len(matching)
        if kind == "lines":
            labels = [t for t in (static.read_stored(line, "_label") for line in matching) if type(t) is str and not t.startswith("_")]
    if labels:
        facts["line_labels"] = [bounded_text(t, 60) for t in labels[:10]]
    legend = static.read_stored(axes, "legend_")
    facts["legend"] = legend is not None and legend is not static.MISSING
    return facts


def _axes_title(axes: Any) -> str:
    parts = [_text_of(static.read_stored(axes, name)) for name in ("_left_title", "title", "_right_title")]
    return " | ".join(p for p in parts if p)


def _children(axes: Any) -> list:
    children = static.read_stored(axes, "_children")  # matplotlib >= 3.5 keeps every artist here
    if static.builtin_base(type(children)) is list:
        return take(list.__iter__(children), 10_000)
    found: list = []
    for name in _ARTIST_KINDS:
        stored = static.read_stored(axes, name)
        if static.builtin_base(type(stored)) is list:
            found += take(list.__iter__(stored), 10_000)
    return found


def _text_of(text: Any) -> str:
    if not library.is_a(text, "matplotlib.text.Text"):
        return ""
    content = static.read_stored(text, "_text")
    return bounded_text(content, 200) if type(content) is str else ""


# -- ipywidgets: the values the widget stores (its traits), no trait code runs --------------------

_WIDGET_KEYS = ("value", "description", "min", "max", "step", "disabled", "orientation", "placeholder", "tooltip")


def trait_values(widget: Any) -> dict:
    values = static.read_stored(widget, "_trait_values")
    return values if static.builtin_base(type(values)) is dict else {}


def _widget_summary(widget: Any) -> tuple[str, int | None]:
    values = trait_values(widget)
    shown = [f"{k}={safe_repr(static.stored(values, k), 60)}" for k in ("value", "description") if static.stored(values, k) is not static.MISSING]
    return " ".join(shown), None


def _widget_preview(widget: Any, max_chars: int) -> dict[str, Any]:
    values = trait_values(widget)
    info: dict[str, Any] = {"widget": static.class_qualname(type(widget))}
    for key in _WIDGET_KEYS:
        found = static.stored(values, key)
        if found is not static.MISSING and found is not None:
            info[key] = plain_text(found, 200) if type(found) is str else safe_repr(found, 200)
    labels = static.stored(values, "_options_labels")
    if static.builtin_base(type(labels)) is tuple:
        info["options"] = [plain_text(v, 60) for v in take(tuple.__iter__(labels), 20)]
    for key in ("children", "outputs"):
        found = static.stored(values, key)
        if static.builtin_base(type(found)) is tuple:
            items = take(tuple.__iter__(found), 20)
            info[key] = [static.type_name(v) for v in items] if key == "children" else tuple.__len__(found)
    return info


# -- xarray: metadata from the variables; values only when already in memory -------------------


def _variable_facts(variable: Any) -> tuple[dict[str, Any], Any]:
    """dims/shape/dtype and where the data is; the in-memory numpy array when there is one."""
    dims = static.read_stored(variable, "_dims")
    facts: dict[str, Any] = {"dims": [plain_text(d) for d in dims] if type(dims) is tuple else safe_repr(dims)}
    chain, leaf = _data_chain(variable)
    if _metadata_is_library_code(leaf):
        facts["shape"] = list(library.accessor(variable, "shape", PATH))
        facts["dtype"] = str(library.accessor(variable, "dtype", PATH))
    else:
        facts["shape"] = f"not read: the data is held by {static.type_name(leaf)}, whose code inspection does not run"
    lazy = any(library.is_a(node, "xarray.core.indexing.LazilyIndexedArray") or library.is_a(
        node, "xarray.core.indexing.LazilyVectorizedIndexedArray") for node in chain)
    in_memory = not lazy and (library.is_a(leaf, "numpy.ndarray") or library.is_a(leaf, "pandas.Index"))
    if in_memory:
        facts["data"] = "in memory"
        return facts, leaf
    facts["data"] = (
        f"lazy ({static.type_name(leaf)}): not loaded by inspection; load a part with execute, "
        "e.g. da.isel(time=slice(0, 5)).values"
    )
    return facts, None


def _data_chain(variable: Any) -> tuple[list, Any]:
    node, chain = static.read_stored(variable, "_data"), []
    while library.is_a(node, "xarray.core.indexing.ExplicitlyIndexed") and len(chain) < 20:
        inner = static.read_stored(node, "array")
        if inner is static.MISSING:
            break
        chain.append(node)
        node = inner
    return chain, node


def _metadata_is_library_code(leaf: Any) -> bool:
    """Reading shape/dtype ends at the leaf's ``shape``/``dtype``: library code, or plain values
    the leaf stores (a user's backend array with ``self.shape = …``)."""
    if library.entry_of(type(leaf)) is not None or library.is_library_class(type(leaf)):
        return True
    return all(
        static.attribute(leaf, name).kind in ("attribute", "slot", "class attribute") for name in ("shape", "dtype")
    )


def _variable_preview(variable: Any, max_chars: int) -> dict[str, Any]:
    facts, data = _variable_facts(variable)
    if data is not None:
        facts.update(_values(data))
    facts["attrs"] = _attrs(static.read_stored(variable, "_attrs"))
    return facts


def _values(data: Any) -> dict[str, Any]:
    if library.is_a(data, "numpy.ndarray"):
        preview_ = _ndarray_preview(data, 2000)
        return {k: preview_[k] for k in ("first_values", "stats") if k in preview_}
    return {"first_values": [plain_text(v) for v in _first_labels(data, 10)]}


def _dataarray_facts(array: Any) -> dict[str, Any]:
    facts, _ = _variable_facts(static.read_stored(array, "_variable"))
    return facts


def _dataarray_summary(array: Any) -> tuple[str, int | None]:
    facts = _dataarray_facts(array)
    lazy = "" if facts["data"] == "in memory" else " (lazy)"
    return f"dims={tuple(facts['dims'])} shape={facts.get('shape')} dtype={facts.get('dtype')}{lazy}", None


def _dataarray_preview(array: Any, max_chars: int) -> dict[str, Any]:
    variable = static.read_stored(array, "_variable")
    info = _variable_preview(variable, max_chars)
    info["array_name"] = safe_repr(static.read_stored(array, "_name"))
    info["coords"] = _coords(_stored_pairs(static.read_stored(array, "_coords")))
    return info


def _dataset_summary(dataset: Any) -> tuple[str, int | None]:
    names = [plain_text(name, 60) for name, _ in _dataset_variables(dataset, coords=False)]
    return f"sizes={_sizes(dataset)} data_vars=[{', '.join(names[:8])}{', …' if len(names) > 8 else ''}]", None


def _dataset_preview(dataset: Any, max_chars: int) -> dict[str, Any]:
    data_vars = {}
    for name, variable in _dataset_variables(dataset, coords=False)[:30]:
        data_vars[plain_text(name, 60)], _ = _variable_facts(variable)
    return {
        "sizes": _sizes(dataset),
        "data_vars": data_vars,
        "coords": _coords(_dataset_variables(dataset, coords=True)),
        "attrs": _attrs(static.read_stored(dataset, "_attrs")),
    }


def _coordinates_preview(coordinates: Any, max_chars: int) -> dict[str, Any]:
    owner = static.read_stored(coordinates, "_data")
    if library.entry_of(type(owner)) == "xarray.DataArray":
        return {"coords": _coords(_stored_pairs(static.read_stored(owner, "_coords")))}
    if library.entry_of(type(owner)) == "xarray.Dataset":
        return {"coords": _coords(_dataset_variables(owner, coords=True))}
    return {"note": "not read: unknown coordinates owner"}


def _sizes(dataset: Any) -> dict[str, Any]:
    dims = static.read_stored(dataset, "_dims")
    return {plain_text(k, 60): v for k, v in take(dict.items(dims), 50)} if static.builtin_base(type(dims)) is dict else {}


def _dataset_variables(dataset: Any, coords: bool) -> list[tuple[Any, Any]]:
    """The dataset's coordinate variables (coords=True) or data variables, from its storage."""
    variables, coord_names = static.read_stored(dataset, "_variables"), static.read_stored(dataset, "_coord_names")
    if static.builtin_base(type(variables)) is not dict or static.builtin_base(type(coord_names)) is not set:
        return []
    coord_keys = {_name_key(name) for name in set.__iter__(coord_names)}
    return [(name, variable) for name, variable in dict.items(variables) if (_name_key(name) in coord_keys) == coords]


def _name_key(name: Any) -> Any:
    """Names compared as strings when they are, else by identity (no user ``__eq__``/``__hash__``)."""
    return str.__str__(name) if static.builtin_base(type(name)) is str else id(name)


def _stored_pairs(mapping: Any) -> list[tuple[Any, Any]]:
    return take(dict.items(mapping), 200) if static.builtin_base(type(mapping)) is dict else []


def _coords(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    shown = {}
    for name, variable in pairs[:20]:
        facts, data = _variable_facts(variable)
        if data is not None:
            facts["first_values"] = _values(data).get("first_values")
        shown[plain_text(name, 60)] = facts
    return shown


def _attrs(attrs: Any) -> dict[str, str]:
    if static.builtin_base(type(attrs)) is not dict:
        return {}
    return {plain_text(k, 60): safe_repr(v, 120) for k, v in take(dict.items(attrs), 30)}


# -- sympy: printed by sympy, only when every node is sympy's own class -------------------------


def _walk_expression(expression: Any, max_nodes: int) -> tuple[int, str | None, list[str]]:
    """(nodes seen, the first foreign class if any, free symbol names), from the stored tree."""
    stack, nodes, symbols = [expression], 0, []
    while stack and nodes <= max_nodes:
        node = stack.pop()
        nodes += 1
        if not library.is_a(node, "sympy.Basic"):
            return nodes, static.type_name(node), symbols
        if library.is_a(node, "sympy.Symbol"):
            name = static.read_stored(node, "name")
            if type(name) is str and name not in symbols:
                symbols.append(name)
        args = static.read_stored(node, "_args")
        if type(args) is tuple:
            stack.extend(args)
    return nodes, None, symbols


def _sympy_text(expression: Any, limit: int, max_nodes: int = _SYMPY_MAX_NODES) -> tuple[str, dict[str, Any]]:
    nodes, foreign, symbols = _walk_expression(expression, max_nodes)
    facts: dict[str, Any] = {"free_symbols": sorted(symbols)[:50], "nodes": nodes}
    if foreign is not None:
        return f"not printed: it contains {foreign}, defined outside sympy, whose printing code inspection does not run", facts
    if nodes > max_nodes:
        facts["nodes"] = f"more than {max_nodes:,}"
        return f"not printed: more than {max_nodes:,} nodes; print a part with execute", facts
    return bounded_text(_get(expression, "__str__")(), limit), facts


def _sympy_summary(expression: Any) -> tuple[str, int | None]:
    text, _ = _sympy_text(expression, 80, max_nodes=200)  # one line of many: keep it cheap
    return text, None


def _sympy_preview(expression: Any, max_chars: int) -> dict[str, Any]:
    text, facts = _sympy_text(expression, max_chars)
    return {"expression": text, **facts}


_SUMMARIES = {
    "numpy.ndarray": _ndarray_summary,
    "numpy.generic": _numpy_scalar_summary,
    "pandas.DataFrame": _frame_summary,
    "pandas.Series": _series_summary,
    "pandas.Index": _index_summary,
    "torch.Tensor": _tensor_summary,
    "matplotlib.figure.Figure": _figure_summary,
    "matplotlib.axes.Axes": _axes_summary,
    "ipywidgets.Widget": _widget_summary,
    "xarray.DataArray": _dataarray_summary,
    "xarray.Dataset": _dataset_summary,
    "sympy.Basic": _sympy_summary,
}

_PREVIEWS = {
    "numpy.ndarray": _ndarray_preview,
    "numpy.generic": _numpy_scalar_preview,
    "pandas.DataFrame": _frame_preview,
    "pandas.Series": _series_preview,
    "pandas.Index": _index_preview,
    "torch.Tensor": _tensor_preview,
    "matplotlib.figure.Figure": _figure_preview,
    "matplotlib.axes.Axes": _axes_preview,
    "ipywidgets.Widget": _widget_preview,
    "xarray.DataArray": _dataarray_preview,
    "xarray.Dataset": _dataset_preview,
    "xarray.Variable": _variable_preview,
    "xarray.Coordinates": _coordinates_preview,
    "sympy.Basic": _sympy_preview,
}

previews.LIBRARY_SUMMARIES.update(_SUMMARIES)
previews.LIBRARY_PREVIEWS.update(_PREVIEWS)
