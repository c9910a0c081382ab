"""Bounded, type-aware views of the user's namespace, safe to compute while a cell runs.

These run on a server thread, concurrently with user code. Rules that keep them safe and fast:
never call ``repr`` (or any method) of an object whose type we do not know; read only cheap
attributes of known types (numpy, pandas, torch, builtins); copy the namespace dict first (one
C call under the GIL) so a running cell can keep assigning.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import re
import sys
from typing import Any

_IPYTHON_PRIVATE = re.compile(r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh)$")
_IPYTHON_PUBLIC = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
_MAX_STR = 200


class VariableError(LookupError):
    """A name or path the agent asked about does not resolve."""


def user_variables(shell: Any, include_private: bool = False) -> dict[str, Any]:
    namespace = dict(shell.user_ns)
    hidden = shell.user_ns_hidden
    result = {}
    for name, value in namespace.items():
        if name[:1] == "_":
            if not include_private or _IPYTHON_PRIVATE.match(name):
                continue
        elif name in _IPYTHON_PUBLIC:
            continue
        if name in hidden and hidden[name] is value:
            continue
        result[name] = value
    return result


def list_variables(
    shell: Any, pattern: str | None = None, include_private: bool = False, limit: int = 200
) -> dict[str, Any]:
    variables = user_variables(shell, include_private)
    names = sorted(variables)
    if pattern:
        names = [n for n in names if _name_matches(n, pattern)]
    total = len(names)
    rows = [summarize(name, variables[name]) for name in names[: max(0, limit)]]
    return {"variables": rows, "total": total, "truncated": total > len(rows)}


def _name_matches(name: str, pattern: str) -> bool:
    """A glob such as ``df*``; a plain word matches as a substring (``df`` finds ``my_df``)."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


# -- one-line summaries ---------------------------------------------------------------------------


def type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module.split('.')[0]}.{cls.__qualname__}"


def summarize(name: str, value: Any) -> dict[str, Any]:
    """Type, a one-line summary and a size estimate, without running user code."""
    cls = type(value)
    module = cls.__module__.split(".")[0]
    summary, size = "", None
    try:
        if module == "numpy" and hasattr(cls, "shape") and cls.__name__ in ("ndarray", "memmap", "matrix"):
            summary, size = f"shape={value.shape} dtype={value.dtype}", int(value.nbytes)
        elif module == "pandas" and cls.__name__ == "DataFrame":
            summary = f"shape={value.shape} columns={_short_list(list(value.columns[:8]), len(value.columns))}"
            size = _pandas_size(value)
        elif module == "pandas" and cls.__name__ in ("Series", "Index"):
            summary, size = f"len={len(value)} dtype={value.dtype}", _pandas_size(value)
        elif module == "torch" and cls.__name__ in ("Tensor", "Parameter"):
            summary = f"shape={tuple(value.shape)} dtype={value.dtype} device={value.device}"
            size = int(value.element_size() * value.nelement())
        elif cls in (int, float, complex, bool) or value is None:
            summary, size = _bounded_text(repr(value)), sys.getsizeof(value)
        elif cls is str:
            summary, size = f"len={len(value)} {_bounded_text(repr(value[:60]))}", sys.getsizeof(value)
        elif cls in (bytes, bytearray):
            summary, size = f"len={len(value)}", sys.getsizeof(value)
        elif cls in (list, tuple, set, frozenset, dict) or isinstance(value, (list, tuple, set, frozenset, dict)):
            summary, size = f"len={len(value)}", sys.getsizeof(value)
        elif inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.ismethod(value):
            summary = f"{getattr(value, '__name__', name)}{_signature(value)}"
        elif inspect.isclass(value):
            summary = f"class {value.__module__}.{value.__qualname__}"
        elif inspect.ismodule(value):
            summary = value.__name__
    except Exception as exc:  # noqa: BLE001 - a broken __len__ must not break the listing
        summary = f"<summary failed: {type(exc).__name__}>"
    row: dict[str, Any] = {"name": name, "type": type_name(value), "summary": summary}
    if size is not None:
        row["size_bytes"] = size
    return row


def _pandas_size(value: Any) -> int | None:
    try:
        usage = value.memory_usage(index=True, deep=False)
        return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
    except Exception:  # noqa: BLE001
        return None


def _short_list(items: list, total: int) -> str:
    text = ", ".join(_bounded_text(str(i), 30) for i in items)
    return f"[{text}{', …' if total > len(items) else ''}]"


def _bounded_text(text: str, limit: int = _MAX_STR) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signature(fn: Any) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


# -- resolving a path such as df.columns, cfg['lr'], items[3] --------------------------------------


def resolve(shell: Any, path: str) -> Any:
    """Evaluate a dotted / indexed path without calling anything the agent wrote.

    Only names, attributes and constant subscripts are accepted: ``a.b``, ``a['k']``,
    ``a[3]``, ``a[-1]``, ``a[1:5]``.
    """
    try:
        node = ast.parse(path.strip(), mode="eval").body
    except SyntaxError:
        raise VariableError(f"{path!r} is not a variable path; use a name such as df, df.columns or cfg['lr']") from None
    return _walk(shell, node, path)


def _walk(shell: Any, node: ast.AST, path: str) -> Any:
    if isinstance(node, ast.Name):
        namespace = shell.user_ns
        if node.id not in namespace:
            raise VariableError(f"name {node.id!r} is not defined in the notebook; call list_variables() to see names")
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        base = _walk(shell, node.value, path)
        try:
            return getattr(base, node.attr)
        except Exception as exc:  # noqa: BLE001
            raise VariableError(f"{ast.unparse(node)}: {type(exc).__name__}: {exc}") from None
    if isinstance(node, ast.Subscript):
        base = _walk(shell, node.value, path)
        key = _constant_key(node.slice, path)
        try:
            return base[key]
        except Exception as exc:  # noqa: BLE001
            raise VariableError(f"{ast.unparse(node)}: {type(exc).__name__}: {exc}") from None
    raise VariableError(
        f"{path!r}: only names, attributes and constant subscripts are allowed (no calls or operators)"
    )


def _constant_key(node: ast.AST, path: str) -> Any:
    try:
        if isinstance(node, ast.Slice):
            parts = [None if p is None else ast.literal_eval(p) for p in (node.lower, node.upper, node.step)]
            return slice(*parts)
        if isinstance(node, ast.Tuple):
            return tuple(_constant_key(e, path) for e in node.elts)
        return ast.literal_eval(node)
    except ValueError:
        raise VariableError(f"{path!r}: subscripts must be constants like [3], ['key'] or [1:5]") from None


# -- previews for inspect_variable ---------------------------------------------------------------

_SAFE_SCALARS = (int, float, complex, bool, type(None))
_STATS_MAX_ELEMENTS = 1_000_000


def preview_value(path: str, value: Any, max_chars: int = 4000) -> dict[str, Any]:
    """A bounded description of ``value``; the shape of the answer depends on its type."""
    info: dict[str, Any] = {"name": path, "type": type_name(value)}
    cls = type(value)
    module = cls.__module__.split(".")[0]
    try:
        if module == "pandas" and cls.__name__ == "DataFrame":
            info.update(_preview_dataframe(value, max_chars))
        elif module == "pandas" and cls.__name__ == "Series":
            info.update(_preview_series(value, max_chars))
        elif module == "numpy" and cls.__name__ in ("ndarray", "memmap", "matrix"):
            info.update(_preview_ndarray(value))
        elif module == "torch" and cls.__name__ in ("Tensor", "Parameter"):
            info.update(_preview_tensor(value))
        elif isinstance(value, _SAFE_SCALARS):
            info["value"] = _bounded_text(repr(value), max_chars)
        elif isinstance(value, str):
            info.update(length=len(value), value=_bounded_text(value, max_chars))
        elif isinstance(value, (bytes, bytearray)):
            info.update(length=len(value), head=repr(bytes(value[:200])))
        elif isinstance(value, dict):
            info.update(length=len(value), items=_preview_items(value.items(), max_chars, mapping=True))
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = value if isinstance(value, (list, tuple)) else sorted_if_possible(value)
            info.update(length=len(value), items=_preview_items(enumerate(items), max_chars))
        elif inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
            info.update(signature=_signature(value), doc=_doc_head(value), defined_in=_source_file(value))
        elif inspect.isclass(value):
            info.update(
                signature=_signature(value),
                doc=_doc_head(value),
                bases=[b.__qualname__ for b in value.__mro__[1:4]],
                public_attributes=_public_names(value),
            )
        elif inspect.ismodule(value):
            info.update(module=value.__name__, file=getattr(value, "__file__", None), doc=_doc_head(value))
        else:
            info.update(_preview_object(value))
    except Exception as exc:  # noqa: BLE001
        info["preview_error"] = f"{type(exc).__name__}: {exc}"
    return info


def sorted_if_possible(items: Any) -> list:
    first = list(_take(items, 50))
    try:
        return sorted(first)
    except TypeError:
        return first


def _take(iterable: Any, n: int) -> Any:
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


def _safe_repr(value: Any, limit: int = 120, depth: int = 0) -> str:
    """repr only for types whose repr cannot run user code; others show as <Type>."""
    cls = type(value)
    if isinstance(value, _SAFE_SCALARS) or cls is str or cls in (bytes, bytearray):
        return _bounded_text(repr(value), limit)
    if depth < 2 and cls in (list, tuple, set, frozenset):
        items = list(_take(value, 8))
        inner = ", ".join(_safe_repr(v, 40, depth + 1) for v in items)
        more = ", …" if len(value) > len(items) else ""
        open_, close = {"list": "[]", "tuple": "()", "set": "{}", "frozenset": "{}"}[cls.__name__]
        return _bounded_text(f"{open_}{inner}{more}{close}", limit)
    if depth < 2 and cls is dict:
        items = list(_take(value.items(), 8))
        inner = ", ".join(f"{_safe_repr(k, 30, depth + 1)}: {_safe_repr(v, 40, depth + 1)}" for k, v in items)
        more = ", …" if len(value) > len(items) else ""
        return _bounded_text("{" + inner + more + "}", limit)
    summary = summarize("", value).get("summary")
    return f"<{type_name(value)}{' ' + summary if summary else ''}>"


def _preview_items(pairs: Any, max_chars: int, mapping: bool = False) -> list[dict[str, str]]:
    rows, used = [], 0
    for key, item in _take(pairs, 50):
        row = {"key" if mapping else "index": _safe_repr(key, 60) if mapping else key, "value": _safe_repr(item)}
        used += len(str(row))
        if used > max_chars:
            break
        rows.append(row)
    return rows


def _preview_dataframe(df: Any, max_chars: int) -> dict[str, Any]:
    import pandas as pd

    dtypes = {str(k): str(v) for k, v in list(df.dtypes.items())[:50]}
    with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 40):
        head = df.head(5).to_string()
    return {
        "shape": list(df.shape),
        "columns": len(df.columns),
        "dtypes": dtypes,
        "head": _bounded_text(head, max_chars),
        "memory_bytes": _pandas_size(df),
        "index": type_name(df.index),
    }


def _preview_series(series: Any, max_chars: int) -> dict[str, Any]:
    return {
        "length": len(series),
        "dtype": str(series.dtype),
        "name": _safe_repr(series.name),
        "head": _bounded_text(series.head(10).to_string(), max_chars),
        "memory_bytes": _pandas_size(series),
    }


def _preview_ndarray(array: Any) -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "nbytes": int(array.nbytes),
    }
    flat = array.reshape(-1) if array.flags.c_contiguous else array.ravel(order="K")[:0]
    if array.size and array.flags.c_contiguous:
        info["first_values"] = np.array2string(flat[:10], threshold=20, max_line_width=200)
    if 0 < array.size <= _STATS_MAX_ELEMENTS and np.issubdtype(array.dtype, np.number):
        with np.errstate(all="ignore"):
            info["stats"] = {
                "min": _py(array.min()),
                "max": _py(array.max()),
                "mean": _py(array.mean()),
            }
    elif array.size > _STATS_MAX_ELEMENTS:
        info["stats"] = f"skipped: more than {_STATS_MAX_ELEMENTS:,} elements (compute them with execute)"
    return info


def _preview_tensor(tensor: Any) -> dict[str, Any]:
    info = {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype),
        "device": str(tensor.device),
        "requires_grad": bool(tensor.requires_grad),
    }
    if tensor.device.type == "cpu" and tensor.nelement():
        info["first_values"] = str(tensor.detach().reshape(-1)[:10].tolist())
    return info


def _py(x: Any) -> Any:
    try:
        return x.item()
    except Exception:  # noqa: BLE001
        return str(x)


def _doc_head(obj: Any, limit: int = 600) -> str | None:
    doc = inspect.getdoc(obj)
    return _bounded_text(doc, limit) if doc else None


def _source_file(obj: Any) -> str | None:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def _public_names(obj: Any, limit: int = 40) -> list[str]:
    names = [n for n in dir(obj) if not n.startswith("_")]
    return names[:limit] + (["…"] if len(names) > limit else [])


def _preview_object(value: Any) -> dict[str, Any]:
    """Unknown type: public attribute names and the types of instance attributes, no repr."""
    info: dict[str, Any] = {}
    instance_dict = getattr(value, "__dict__", None) if not isinstance(type(value).__dict__.get("__dict__"), property) else None
    if isinstance(instance_dict, dict):
        info["attributes"] = {
            k: _safe_repr(v, 80) for k, v in list(_take(instance_dict.items(), 40)) if not k.startswith("_")
        }
    try:
        info["public_names"] = _public_names(type(value))
    except Exception:  # noqa: BLE001
        pass
    doc = _doc_head(type(value), 300)
    if doc:
        info["class_doc"] = doc
    return info
