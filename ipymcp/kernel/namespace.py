"""The user's namespace as inspection sees it: listing names, resolving paths, previewing values.

These run on a server thread, beside the user's cell, at every permission level, so they never run
the notebook's code (``static``: properties, ``__getattr__``, ``__getitem__``, overrides of
builtin subclasses…) and run library code only through one allow-list (``library``). What cannot
be read that way is described (a property, a method, a ``__getattr__`` class…) with the way to get
it: ``execute``. The namespace dict is copied first (one C call under the GIL) so a running cell
can keep assigning.

``reset_user_namespace`` (reset_namespace) is the exception: it changes the namespace, and runs
on the kernel's main thread, queued like a cell.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

# library_previews registers the library types' previews with previews (with the server, not on a first call).
from . import library, library_previews, static  # noqa: F401
from .previews import error_text, preview_value, safe_repr, subclass_note, summarize

__all__ = [
    "NotEvaluated",
    "VariableError",
    "inspect",
    "list_variables",
    "reset_user_namespace",
    "resolve",
    "summarize",
    "user_variables",
]

_IPYTHON_PRIVATE = re.compile(r"^(_+|_i+|_i\d+|_\d+|_oh|_ih|_dh)$")
_IPYTHON_PUBLIC = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
# A slice of a list/tuple/str larger than this is refused rather than copied.
_MAX_SLICE = 100_000


class VariableError(LookupError):
    """A name or path the agent asked about does not resolve."""


class NotEvaluated(Exception):
    """The path leads to something only running code could produce; ``description`` says what."""

    def __init__(self, description: dict[str, Any]):
        super().__init__(description["what"])
        self.description = description


def user_variables(shell: Any, include_private: bool = False) -> dict[str, Any]:
    namespace = dict.copy(shell.user_ns)
    hidden = shell.user_ns_hidden
    result = {}
    for name, value in dict.items(namespace):
        if type(name) is not str:
            continue  # globals()[1] = … is possible; a name that is not a str has no path
        if name[:1] == "_":
            if not include_private or _IPYTHON_PRIVATE.match(name):
                continue
        elif name in _IPYTHON_PUBLIC:
            continue
        if dict.get(hidden, name, static.MISSING) is value:
            continue
        result[name] = value
    return result


def list_variables(
    shell: Any, pattern: str | None = None, include_private: bool = False, limit: int = 200
) -> dict[str, Any]:
    variables = user_variables(shell, include_private)
    names = sorted(variables)
    if pattern:
        matches = _name_matcher(pattern)
        names = [n for n in names if matches(n)]
    total = len(names)
    rows = [summarize(name, variables[name]) for name in names[: max(0, limit)]]
    return {"variables": rows, "total": total, "truncated": total > len(rows)}


def _name_matcher(pattern: str) -> Any:
    """A glob such as ``df*``; a plain word matches as a substring (``df`` finds ``my_df``).

    Compiled here, not through ``fnmatch.fnmatchcase``: its cache of compiled patterns holds up
    to 32,768 entries (a flood of distinct patterns stays in memory). ``re``'s own cache is
    small and bounded, and the pattern's length is bounded by the tool.
    """
    if any(ch in pattern for ch in "*?["):
        return re.compile(fnmatch.translate(pattern)).match
    return lambda name: pattern in name


# -- resolving a path such as df.columns, cfg['lr'], items[3] --------------------------------------


@dataclass
class Resolved:
    value: Any
    notes: list[str] = field(default_factory=list)


def inspect(shell: Any, path: str, max_chars: int = 4000) -> dict[str, Any]:
    """The preview of ``path``, or the description of what reading it would run."""
    try:
        resolved = resolve(shell, path)
    except NotEvaluated as described:
        return described.description
    info = preview_value(path, resolved.value, max_chars)
    if resolved.notes:
        info["notes"] = resolved.notes
    return info


def resolve(shell: Any, path: str) -> Resolved:
    """Follow a path without running the notebook's code.

    Only names, attributes and constant subscripts are accepted: ``a.b``, ``a['k']``, ``a[3]``,
    ``a[-1]``, ``a[1:5]``. Raises ``VariableError`` (no such thing) or ``NotEvaluated`` (it exists,
    but only code could produce it).
    """
    try:
        node = ast.parse(path.strip(), mode="eval").body
    except SyntaxError:
        raise VariableError(f"{path!r} is not a variable path; use a name such as df, df.columns or cfg['lr']") from None
    resolved = Resolved(None)
    resolved.value = _walk(shell, node, path, resolved.notes)
    return resolved


def _walk(shell: Any, node: ast.AST, path: str, notes: list[str]) -> Any:
    if isinstance(node, ast.Name):
        value = dict.get(shell.user_ns, node.id, static.MISSING)
        if value is static.MISSING:
            raise VariableError(f"name {node.id!r} is not defined in the notebook; call list_variables() to see names")
        return value
    if isinstance(node, ast.Attribute):
        base = _walk(shell, node.value, path, notes)
        return _attribute(base, node.attr, ast.unparse(node), path)
    if isinstance(node, ast.Subscript):
        base = _walk(shell, node.value, path, notes)
        key = _constant_key(node.slice, path)
        return _subscript(base, key, ast.unparse(node), path, notes)
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


def _attribute(base: Any, name: str, step: str, path: str) -> Any:
    if library.allows(base, name):
        return _library_call(lambda: library.accessor(base, name, library.PATH), step)
    if library.allows(base, library.TRAITS):
        trait = _widget_trait(base, name, step, path)
        if trait is not static.MISSING:
            return trait
    if static.is_subclass(type(base), type):
        found = static.class_attribute(base, name)
    else:
        found = static.attribute(base, name)
    if found.value is not static.MISSING:
        return found.value
    if found.kind == "missing":
        raise VariableError(f"{step}: {static.type_name(base)} has no attribute {name!r}")
    raise NotEvaluated(_description(step, path, found.kind, found.owner, base))


def _widget_trait(widget: Any, name: str, step: str, path: str) -> Any:
    """A widget's trait (``slider.value``) is the value it stores; reading it runs no trait code."""
    from .library_previews import trait_values

    owner, found = static.lookup(type(widget), name)
    if owner is None or not library.is_a(found, "traitlets.TraitType"):
        return static.MISSING
    value = static.stored(trait_values(widget), name)
    if value is static.MISSING:
        raise NotEvaluated(_description(step, path, "trait not set yet (its default is computed when read)", owner, widget))
    return value


def _subscript(base: Any, key: Any, step: str, path: str, notes: list[str]) -> Any:
    cls = type(base)
    storage = static.builtin_base(cls)
    if storage is dict:
        value = _dict_item(base, key, step)
    elif storage is not None and static.one_of(storage, (list, tuple, str, bytes, bytearray)):
        value = _sequence_item(base, storage, key, step)
    else:
        return _library_subscript(base, key, step, path)
    if cls is not storage and static.defines(cls, "__getitem__", (object, storage)) is not None:
        notes.append(f"{step}: {subclass_note(cls, storage)}")
    return value


def _dict_item(mapping: Any, key: Any, step: str) -> Any:
    """``mapping[key]`` from the dict's storage: never ``__missing__`` (a defaultdict gains nothing)."""
    try:
        value = dict.get(mapping, key, static.MISSING) if _keys_compare_safely(mapping, key) else _scan(mapping, key)
    except TypeError:
        raise VariableError(f"{step}: {safe_repr(key, 80)} cannot be a dict key (unhashable)") from None
    if value is not static.MISSING:
        return value
    missing_hook = static.defines(type(mapping), "__missing__")
    extra = (
        f"; {static.type_name(mapping)}[key] would call its __missing__ (a defaultdict inserts a default), "
        "which inspection does not"
        if missing_hook is not None
        else ""
    )
    raise VariableError(f"{step}: KeyError: {safe_repr(key, 80)} is not a key{extra}")


def _keys_compare_safely(mapping: Any, key: Any) -> bool:
    """``dict.get`` compares ``key`` with stored keys of equal hash; that runs no user code when
    every stored key is a plain str/number/bytes/None (tuples too, unless ``key`` is a tuple)."""
    plain = (str, int, float, complex, bool, bytes, type(None))
    plain_ids = {id(t) for t in plain}
    if type(key) is not tuple and type(key) is not frozenset:
        plain_ids |= {id(tuple), id(frozenset)}
    return all(id(type(k)) in plain_ids for k in dict.__iter__(mapping))


def _scan(mapping: Any, key: Any) -> Any:
    """Find ``key`` by comparing only keys of exactly the same plain type (slower, always safe)."""
    for stored_key, value in dict.items(mapping):
        if _same_constant(stored_key, key):
            return value
    return static.MISSING


def _same_constant(stored_key: Any, key: Any) -> bool:
    if type(stored_key) is not type(key):
        return False
    if type(key) is tuple:
        return len(key) == tuple.__len__(stored_key) and all(
            _same_constant(a, b) for a, b in zip(tuple.__iter__(stored_key), key, strict=True)
        )
    return stored_key == key


def _sequence_item(sequence: Any, storage: type, key: Any, step: str) -> Any:
    if type(key) is slice:
        try:
            length = len(range(storage.__len__(sequence))[key])
        except (ValueError, TypeError):
            raise VariableError(f"{step}: not a valid slice (steps are non-zero integers)") from None
        if length > _MAX_SLICE:
            raise VariableError(f"{step}: a slice of {length:,} items is too long to preview; narrow it, e.g. [0:100]")
    elif type(key) is not int:
        raise VariableError(f"{step}: {storage.__name__} indices must be integers or slices like [1:5]")
    try:
        return storage.__getitem__(sequence, key)
    except IndexError:
        raise VariableError(
            f"{step}: IndexError: index {key} is out of range (length {storage.__len__(sequence)})"
        ) from None


def _library_subscript(base: Any, key: Any, step: str, path: str) -> Any:
    rule = library.subscript_rule(base)
    if rule is None:
        owner = static.defines(type(base), "__getitem__")
        if owner is None and not static.is_subclass(type(base), type):
            raise VariableError(f"{step}: {static.type_name(base)} is not subscriptable")
        raise NotEvaluated(_description(step, path, "__getitem__", owner or type(base), base))
    if not _key_fits(base, key):
        raise VariableError(f"{step}: inspection subscripts a {static.type_name(base)} only with {rule}")
    return _library_call(lambda: base[key], step)


def _key_fits(base: Any, key: Any) -> bool:
    """The constant key is one the allow-list's rule for this type accepts."""
    entry = library.entry_of(type(base))
    if entry == "numpy.ndarray":
        parts = key if type(key) is tuple else (key,)
        return all(type(p) is int or type(p) is slice or p is Ellipsis or p is None for p in parts)
    if entry == "pandas.Index":
        return type(key) is int or type(key) is slice
    if entry == "pandas.DataFrame":
        return _plain_label(key) and _labels_are_plain(library.accessor(base, "columns", library.PATH))
    return type(key) is str  # xarray: a variable or coordinate name


def _plain_label(key: Any) -> bool:
    if type(key) is tuple:
        return all(_plain_label(k) for k in key)
    return static.one_of(type(key), (str, int, float, bool))


def _labels_are_plain(columns: Any) -> bool:
    """Looking a label up hashes and compares the column labels: only when they are plain values
    (pandas infers the kind in C, without calling the labels)."""
    dtype = library.accessor(columns, "dtype", library.PATH)
    if dtype.kind != "O":
        return True
    return library.accessor(columns, "inferred_type") in ("string", "integer", "floating", "boolean")


def _library_call(read: Any, step: str) -> Any:
    try:
        return read()
    except library.NotAllowed as exc:
        raise VariableError(f"{step}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the library's own error, e.g. a KeyError for a column
        raise VariableError(f"{step}: {error_text(exc)}") from None


# -- describing what was not evaluated ------------------------------------------------------------

_WHAT = {
    "property": "a property: reading it runs its code",
    "__getattr__": "not stored on the object; its class defines __getattr__, which would compute it",
    "module __getattr__": "not in the module; the module defines __getattr__, which would compute it",
    "custom __getattribute__": "on a class that defines __getattribute__: every attribute read runs its code",
    "__getitem__": "a subscript: the class defines __getitem__, which would compute it",
    "unset slot": "a slot that holds no value yet",
    "computed attribute (C)": "computed by the type's C code",
}


def _description(step: str, path: str, kind: str, owner: type | None, base: Any) -> dict[str, Any]:
    owner_name = static.class_qualname(owner) if owner is not None else static.type_name(base)
    module = static.class_module(owner) if owner is not None else ""
    where = f"{owner_name} (from {module})" if module not in ("", "builtins") else owner_name
    what = f"{step} is {_WHAT.get(kind, f'a {kind}: reading it runs code')} — {where}"
    if library.entry_of(type(base)) is not None:
        what += "; not on inspection's allow-list of library accessors (it may compute or copy a lot)"
    rest = f", so {path} was not followed" if step != path.strip() else ""
    return {
        "name": path,
        "evaluated": False,
        "kind": kind,
        "owner": owner_name,
        "what": what,
        "note": (
            f"Not evaluated{rest}: inspection never runs the notebook's code, only reads what is stored. "
            f"To get the value, run it: execute(code={step!r}) (needs the execute permission level)."
        ),
    }


# -- clearing it (reset_namespace) ------------------------------------------------------------------


def reset_user_namespace(shell: Any, keep: list[str]) -> dict[str, Any]:
    """On the main thread: ``%reset -f`` keeping the names in ``keep``; counts what the user loses."""
    import gc

    ns = shell.user_ns
    hidden = getattr(shell, "user_ns_hidden", {})
    missing = [name for name in keep if name not in ns]
    saved = {name: ns[name] for name in keep if name in ns}
    user_names = [n for n in ns if n not in hidden and not n.startswith("_")]
    shell.reset(new_session=False)
    ns.update(saved)
    gc.collect()
    result: dict[str, Any] = {
        "removed": len([n for n in user_names if n not in saved]),
        "kept": sorted(saved),
        "execution_count": shell.execution_count,
    }
    if missing:
        result["not_found"] = missing
    return result
