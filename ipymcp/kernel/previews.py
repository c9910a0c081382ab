"""Bounded previews and one-line summaries of values, computed without running the notebook's code.

Builtins are read through their C-level base methods (``list.__len__(x)``, ``dict.items(x)``), so
a subclass's overrides never run; library types go through ``library_previews`` (the allow-list);
anything else is described from its type and its stored attributes, never by ``repr``.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import inspect
import pathlib
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

from ..text import shorten
from . import library, static

MAX_TEXT = 200
_ITEMS = 50
_SCALARS = (int, float, complex, bool, type(None))
# Exact stdlib types whose repr is the standard library's and reads nothing of the user's.
_STDLIB_REPR = (
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
        range,
        slice,
        type(Ellipsis),
)
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def bounded_text(text: str, limit: int = MAX_TEXT) -> str:
    return shorten(text, limit)


# Summaries and previews of the allow-list's library types, by its entry name ("numpy.ndarray"):
# ``library_previews`` registers them (it builds on this module's short texts). ``namespace``
# imports it with itself, so they are in place before the first preview.
LIBRARY_SUMMARIES: dict[str, Callable[[Any], tuple[str, int | None]]] = {}
LIBRARY_PREVIEWS: dict[str, Callable[[Any, int], dict[str, Any]]] = {}


def _library_summary(value: Any) -> tuple[str, int | None] | None:
    handler = LIBRARY_SUMMARIES.get(library.entry_of(type(value)) or "")
    return handler(value) if handler is not None else None


def _library_preview(value: Any, max_chars: int) -> dict[str, Any] | None:
    handler = LIBRARY_PREVIEWS.get(library.entry_of(type(value)) or "")
    return handler(value, max_chars) if handler is not None else None


# -- short texts ------------------------------------------------------------------------------


def safe_repr(value: Any, limit: int = 120, depth: int = 0) -> str:
    """``repr`` where it cannot run the notebook's code; otherwise ``<Type summary>``."""
    cls = type(value)
    if static.one_of(cls, _SCALARS):
        return bounded_text(_scalar_repr(value), limit)
    base = static.builtin_base(cls)
    if base is not None:
        text = _builtin_repr(value, base, limit, depth)
        if text is not None:
            return text if cls is base else bounded_text(f"{static.type_name(value)}({text})", limit)
    if static.one_of(cls, _STDLIB_REPR):
        return bounded_text(repr(value), limit)
    member = enum_member(value)
    if member is not None:
        return bounded_text(member, limit)
    if library.is_scalar(value):
        return bounded_text(repr(value), limit)
    summary = summary_text(value)
    return bounded_text(f"<{static.type_name(value)}{' ' + summary if summary else ''}>", limit)


def plain_text(value: Any, limit: int = 40) -> str:
    """A table cell or a label: strings as themselves, numbers as usual, others as ``safe_repr``."""
    base = static.builtin_base(type(value))
    if base is str:
        return bounded_text(str.__str__(value), limit)
    if library.is_scalar(value):
        return bounded_text(str(value), limit)
    return safe_repr(value, limit)


def _scalar_repr(value: Any) -> str:
    if type(value) is int and int.bit_length(value) > 4000:
        return f"<int of {int.bit_length(value)} bits>"
    return repr(value)


def _builtin_repr(value: Any, base: type, limit: int, depth: int) -> str | None:
    if base is int:
        return f"<int of {int.bit_length(value)} bits>" if int.bit_length(value) > 4000 else int.__repr__(value)
    if base is float or base is complex:
        return base.__repr__(value)
    if base is str:
        return str.__repr__(str.__getitem__(value, slice(0, limit)))
    if base is bytes or base is bytearray:
        return bytes.__repr__(bytes(base.__getitem__(value, slice(0, limit))))
    if depth >= 2:
        return f"<{base.__name__} len={base.__len__(value)}>"
    if base is dict:
        pairs = take(dict.items(value), 8)
        inner = ", ".join(f"{safe_repr(k, 30, depth + 1)}: {safe_repr(v, 40, depth + 1)}" for k, v in pairs)
        more = ", …" if dict.__len__(value) > len(pairs) else ""
        return bounded_text("{" + inner + more + "}", limit)
    items = take(base.__iter__(value), 8)
    inner = ", ".join(safe_repr(v, 40, depth + 1) for v in items)
    if base is tuple and len(items) == 1 and tuple.__len__(value) == 1:
        inner += ","
    more = ", …" if base.__len__(value) > len(items) else ""
    brackets = {list: "[]", tuple: "()", set: "{}", frozenset: "{}"}[base]
    if not items and (base is set or base is frozenset):
        return f"{base.__name__}()"
    return bounded_text(f"{brackets[0]}{inner}{more}{brackets[1]}", limit)


def take(iterable: Any, n: int) -> list:
    items = []
    for item in iterable:
        if len(items) >= n:
            break
        items.append(item)
    return items


def enum_member(value: Any) -> str | None:
    if not static.is_subclass(type(value), enum.Enum):
        return None
    name = static.read_stored(value, "_name_")
    return f"{static.class_qualname(type(value))}.{name}" if type(name) is str else None


def error_text(exc: BaseException) -> str:
    """An exception as text without its ``__str__`` (a library error may hold user objects)."""
    args = BaseException.__dict__["args"].__get__(exc) if static.is_subclass(type(exc), BaseException) else ()
    first = args[0] if type(args) is tuple and args else None
    detail = bounded_text(first) if type(first) is str else (safe_repr(first, 80) if args else "")
    return f"{static.type_name(exc)}: {detail}" if detail else static.type_name(exc)


# -- one-line summaries (list_variables) ------------------------------------------------------


def summarize(name: str, value: Any) -> dict[str, Any]:
    """Type, a one-line summary and a size estimate, without running the notebook's code."""
    try:
        summary, size = _summary(value)
    except Exception as exc:  # noqa: BLE001 - one odd object must not break the listing
        summary, size = f"<summary failed: {error_text(exc)}>", None
    row: dict[str, Any] = {"name": name, "type": static.type_name(value), "summary": summary}
    if size is not None:
        row["size_bytes"] = size
    return row


def summary_text(value: Any) -> str:
    try:
        return _summary(value)[0]
    except Exception:  # noqa: BLE001
        return ""


def _summary(value: Any) -> tuple[str, int | None]:
    cls = type(value)
    if cls is int or cls is float or cls is bool or value is None or cls is complex:  # the common case, first
        return bounded_text(_scalar_repr(value)), sys.getsizeof(value)
    base = static.builtin_base(cls)
    if base is not None and base is not cls:
        library_summary = _library_summary(value)
        if library_summary is not None:
            return library_summary
        if library.is_scalar(value):
            return bounded_text(str(value)), None
    if base is not None:
        size = sys.getsizeof(value) if cls is base else base.__sizeof__(value)
        if static.one_of(base, (int, float, complex)):
            return bounded_text(_builtin_repr(value, base, MAX_TEXT, 0) or ""), size
        if base is str:
            head = str.__repr__(str.__getitem__(value, slice(0, 60)))
            return f"len={str.__len__(value)} {bounded_text(head)}", size
        return f"len={base.__len__(value)}", size
    library_summary = _library_summary(value)
    if library_summary is not None:
        return library_summary
    if library.is_scalar(value):
        return bounded_text(str(value)), None
    if static.one_of(cls, _FUNCTION_TYPES):
        return f"{_function_name(value)}{signature_text(value)}", None
    if static.is_subclass(cls, type):
        return f"class {static.class_module(value)}.{static.class_qualname(value)}", None
    if static.is_subclass(cls, types.ModuleType):
        storage = static.instance_dict(value) or {}
        module_name = static.stored(storage, "__name__")
        return (module_name if type(module_name) is str else ""), None
    member = enum_member(value)
    return (member or ""), None


# -- previews (inspect_variable) ----------------------------------------------------------------


def preview_value(path: str, value: Any, max_chars: int = 4000) -> dict[str, Any]:
    """A bounded description of ``value``; the shape of the answer depends on its type."""
    info: dict[str, Any] = {"name": path, "type": static.type_name(value)}
    try:
        info.update(_preview(value, max_chars))
    except Exception as exc:  # noqa: BLE001
        info["preview_error"] = error_text(exc)
    return info


def _preview(value: Any, max_chars: int) -> dict[str, Any]:
    cls = type(value)
    if static.one_of(cls, _SCALARS):
        return {"value": bounded_text(_scalar_repr(value), max_chars)}
    base = static.builtin_base(cls)
    if base is cls:
        return _preview_builtin(value, base, max_chars)
    library_preview = _library_preview(value, max_chars)  # numpy.float64 is a float too
    if library_preview is not None:
        return library_preview
    if library.is_scalar(value):
        return {"value": bounded_text(str(value), max_chars), "repr": bounded_text(repr(value), max_chars)}
    if base is not None:
        info = _preview_builtin(value, base, max_chars)
        info["note"] = subclass_note(cls, base)
        return info
    if static.one_of(cls, _STDLIB_REPR):
        return {"value": bounded_text(repr(value), max_chars)}
    if static.one_of(cls, _FUNCTION_TYPES):
        return _preview_function(value)
    if static.is_subclass(cls, type):
        return _preview_class(value)
    if static.is_subclass(cls, types.ModuleType):
        return _preview_module(value)
    return _preview_object(value)


def subclass_note(cls: type, base: type) -> str:
    return (
        f"{static.class_qualname(cls)} is a subclass of {base.__name__}: shown from the {base.__name__}'s own "
        f"storage; its methods (__len__, __iter__, __getitem__, __repr__…) were not run, and may answer differently"
    )


def _preview_builtin(value: Any, base: type, max_chars: int) -> dict[str, Any]:
    if static.one_of(base, (int, float, complex)):
        return {"value": bounded_text(_builtin_repr(value, base, max_chars, 0) or "", max_chars)}
    if base is str:
        return {"length": str.__len__(value), "value": bounded_text(str.__str__(str.__getitem__(value, slice(0, max_chars + 1))), max_chars)}
    if base is bytes or base is bytearray:
        return {"length": base.__len__(value), "head": bytes.__repr__(bytes(base.__getitem__(value, slice(0, 200))))}
    if base is dict:
        pairs = take(dict.items(value), _ITEMS)
        return {"length": dict.__len__(value), "items": _rows(((safe_repr(k, 60), v) for k, v in pairs), "key", max_chars)}
    if base is list or base is tuple:
        return {"length": base.__len__(value), "items": _rows(enumerate(take(base.__iter__(value), _ITEMS)), "index", max_chars)}
    items, order = _set_items(value, base)
    return {"length": base.__len__(value), "order": order, "items": _rows(enumerate(items), "index", max_chars)}


def _set_items(value: Any, base: type) -> tuple[list, str]:
    """Sorted only when every element is a plain str or number (sorting calls ``__lt__``)."""
    items = take(base.__iter__(value), _ITEMS)
    all_text = all(type(item) is str for item in items)
    all_numbers = all(type(item) is int or type(item) is float for item in items)
    if items and base.__len__(value) <= _ITEMS and (all_text or all_numbers):
        return sorted(items), "sorted"
    return items, "iteration order (not sorted: sorting would call the elements' own comparisons)"


def _rows(pairs: Any, key_name: str, max_chars: int) -> list[dict[str, Any]]:
    rows, used = [], 0
    for key, item in pairs:
        row = {key_name: key, "value": safe_repr(item)}
        used += len(str(row))
        if used > max_chars:
            break
        rows.append(row)
    return rows


def _function_name(fn: Any) -> str:
    target = fn.__func__ if type(fn) is types.MethodType else fn
    plain = type(target) is types.FunctionType or type(target) is types.BuiltinFunctionType
    name = target.__name__ if plain else ""
    return name if type(name) is str else ""


def _preview_function(fn: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"signature": signature_text(fn), "doc": doc_head(fn)}
    target = fn.__func__ if type(fn) is types.MethodType else fn
    if type(target) is types.FunctionType:
        info["defined_in"] = target.__code__.co_filename
    if type(fn) is types.MethodType:
        info["bound_to"] = static.type_name(fn.__self__)
    return info


def _preview_class(cls: type) -> dict[str, Any]:
    doc = static.class_dict(cls).get("__doc__")
    return {
        "signature": _class_signature(cls),
        "doc": bounded_text(inspect.cleandoc(doc), 600) if type(doc) is str else None,
        "bases": [static.class_qualname(b) for b in static.mro(cls)[1:4]],
        "members": static.members(cls),
    }


def _preview_module(module: Any) -> dict[str, Any]:
    storage = static.instance_dict(module) or {}
    name, file, doc = (static.stored(storage, key) for key in ("__name__", "__file__", "__doc__"))
    return {
        "module": name if type(name) is str else None,
        "file": file if type(file) is str else None,
        "doc": bounded_text(inspect.cleandoc(doc), 600) if type(doc) is str else None,
    }


def _preview_object(value: Any) -> dict[str, Any]:
    """Unknown type: its stored attributes (safely shown) and what its class offers; no repr."""
    cls = type(value)
    info: dict[str, Any] = {"attributes": stored_attributes(value)}
    info["members"] = static.members(cls)
    getattr_owner = static.defines(cls, "__getattr__")
    if static.has_custom_getattribute(cls):
        info["dynamic_attributes"] = (
            f"{static.class_qualname(cls)} defines __getattribute__: every attribute read runs its code (not run here)"
        )
    elif getattr_owner is not None:
        info["dynamic_attributes"] = (
            f"{static.class_qualname(getattr_owner)} defines __getattr__: names not stored on the object are "
            "computed by its code (not run here)"
        )
    member = enum_member(value)
    if member is not None:
        info["member"] = member
        info["value"] = safe_repr(static.read_stored(value, "_value_"))
    doc = static.class_dict(cls).get("__doc__")
    if type(doc) is str:
        info["class_doc"] = bounded_text(inspect.cleandoc(doc), 300)
    return info


def stored_attributes(value: Any, limit: int = 40) -> dict[str, str]:
    """Public attributes the object stores (instance dict, then slots), shown with ``safe_repr``."""
    attributes: dict[str, str] = {}
    storage = static.instance_dict(value)
    if storage is not None:
        for key, item in take(dict.items(storage), limit * 2):
            if type(key) is str and not key.startswith("_") and len(attributes) < limit:
                attributes[key] = safe_repr(item, 80)
    for klass in static.mro(type(value)):
        slots = static.class_dict(klass).get("__slots__", ())
        names = (slots,) if type(slots) is str else slots if type(slots) is tuple or type(slots) is list else ()
        for slot in names:
            if type(slot) is str and not slot.startswith("_") and slot not in attributes and len(attributes) < limit:
                found = static.read_stored(value, slot)
                attributes[slot] = safe_repr(found, 80) if found is not static.MISSING else "<unset slot>"
    return attributes


# -- signatures and docstrings ------------------------------------------------------------------


class _Shown:
    """Stands in for a default value or annotation in a Signature, so ``str(signature)`` prints
    our safe text instead of calling the object's ``repr``."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_text(fn: Any) -> str:
    target = fn.__func__ if type(fn) is types.MethodType else fn
    try:
        if type(target) is types.FunctionType:
            storage = static.instance_dict(target) or {}
            if any(dict.__contains__(storage, key) for key in ("__signature__", "_partialmethod", "__partialmethod__")):
                return "(...)"
            signature = inspect.signature(target, follow_wrapped=False)
        elif type(target) is types.BuiltinFunctionType:
            signature = inspect.signature(target)
        else:
            return "(...)"
    except (TypeError, ValueError):
        return "(...)"
    parameters = list(signature.parameters.values())
    if type(fn) is types.MethodType and parameters:
        parameters = parameters[1:]
    shown = [
        p.replace(default=_shown(p.default, 40), annotation=_annotation(p.annotation)) for p in parameters
    ]
    return str(signature.replace(parameters=shown, return_annotation=_annotation(signature.return_annotation)))


def _class_signature(cls: type) -> str:
    for name in ("__init__", "__new__"):
        owner, found = static.lookup(cls, name)
        if type(found) is types.FunctionType:
            return signature_text(types.MethodType(found, cls))
    return "(...)"


def _shown(value: Any, limit: int) -> Any:
    return value if value is inspect.Parameter.empty else _Shown(safe_repr(value, limit))


def _annotation(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return annotation
    if type(annotation) is str:
        return _Shown(annotation)
    if static.is_subclass(type(annotation), type):
        return _Shown(static.class_qualname(annotation))
    return _Shown(safe_repr(annotation, 40))


def doc_head(obj: Any, limit: int = 600) -> str | None:
    target = obj.__func__ if type(obj) is types.MethodType else obj
    plain = type(target) is types.FunctionType or type(target) is types.BuiltinFunctionType
    doc = target.__doc__ if plain else None
    return bounded_text(inspect.cleandoc(doc), limit) if type(doc) is str and doc.strip() else None
