"""The one allow-list of library code that inspection may run, and how library types are known.

Inspection runs no notebook code, but a DataFrame's shape or an array's first values are library
code. This module is the only door to it: ``ALLOW_LIST`` names (library class, accessor) pairs,
and ``accessor(value, name)`` hands out an accessor only when

- ``type(value)`` is the library class itself, or a subclass made of real library classes only
  (``numpy.memmap`` counts as ``numpy.ndarray``; a user's ``class MyFrame(pd.DataFrame)`` does
  not, nor a class that merely calls itself ``pandas.core.frame.DataFrame``): each class in the
  MRO up to the entry must be the object its module and qualname name in ``sys.modules``, in a
  trusted library;
- the accessor found on the class is that library's own code (a property, function or C
  descriptor from the library's modules; not one the notebook patched in).

Libraries are never imported here: if ``pandas`` is not in ``sys.modules``, no DataFrame exists.
"""

from __future__ import annotations

import sys
import types
import weakref
from typing import Any

from . import static

TRUSTED_ROOTS = frozenset(
    {"numpy", "pandas", "matplotlib", "mpl_toolkits", "ipywidgets", "traitlets", "xarray", "sympy", "torch", "dask"}
)

PATH = "path"  # an agent's path may read it (df.columns), and previews may
PREVIEW = "preview"  # previews call it, always with bounded arguments; paths never do
SUBSCRIPT = "[]"  # the constant keys obj[key] accepts, in words
TRAITS = "<traits>"  # traitlets traits, read from the object's stored trait values

ALLOW_LIST: dict[str, dict[str, str]] = {
    "pandas.DataFrame": {
        **dict.fromkeys(("shape", "columns", "dtypes", "index", "ndim", "size"), PATH),
        **dict.fromkeys(("head", "iloc", "memory_usage", "to_numpy"), PREVIEW),
        SUBSCRIPT: "a column label",
    },
    "pandas.Series": {
        **dict.fromkeys(("shape", "dtype", "index", "name", "ndim", "size"), PATH),
        **dict.fromkeys(("head", "memory_usage", "to_numpy", "sum"), PREVIEW),
    },
    "pandas.Index": {
        **dict.fromkeys(("shape", "dtype", "name", "names", "ndim", "size", "nlevels"), PATH),
        **dict.fromkeys(("memory_usage", "to_numpy", "inferred_type", "__getitem__"), PREVIEW),
        SUBSCRIPT: "a position or a slice",
    },
    "numpy.ndarray": {
        **dict.fromkeys(("shape", "dtype", "ndim", "size", "nbytes"), PATH),
        **dict.fromkeys(("flat", "min", "max", "mean"), PREVIEW),
        SUBSCRIPT: "integers and slices (a view: nothing is copied)",
    },
    "numpy.generic": {"item": PREVIEW},
    "torch.Tensor": {
        **dict.fromkeys(("shape", "dtype", "device", "requires_grad"), PATH),
        **dict.fromkeys(("element_size", "nelement", "detach"), PREVIEW),
    },
    "matplotlib.figure.Figure": {"axes": PATH, "get_size_inches": PREVIEW},
    "matplotlib.axes.Axes": dict.fromkeys(("lines", "collections", "patches", "images", "texts"), PATH),
    "ipywidgets.Widget": {TRAITS: PATH},
    "xarray.DataArray": {
        **dict.fromkeys(("dims", "shape", "dtype", "coords", "attrs", "name", "sizes"), PATH),
        SUBSCRIPT: "a coordinate name",
    },
    "xarray.Dataset": {**dict.fromkeys(("sizes", "coords", "attrs"), PATH), SUBSCRIPT: "a variable name"},
    "xarray.Variable": dict.fromkeys(("dims", "shape", "dtype", "attrs"), PATH),
    "xarray.Coordinates": {SUBSCRIPT: "a coordinate name"},
    "sympy.Basic": {"args": PATH, "__str__": PREVIEW},
}

# Library scalars whose repr is the library's own and cheap (tables, dict values, dtypes).
SCALARS = ("numpy.generic", "numpy.dtype", "pandas.Timestamp", "pandas.Timedelta", "pandas.Period")
_NOT_SCALARS = ("numpy.void", "numpy.object_")


class NotAllowed(LookupError):
    """The accessor is not on the allow-list for this object."""


def accessor(value: Any, name: str, use: str = PREVIEW) -> Any:
    """``getattr(value, name)``, only for an allow-listed pair whose code is the library's."""
    entry = entry_of(type(value))
    allowed = ALLOW_LIST.get(entry or "", {}).get(name)
    if allowed is None or (use == PATH and allowed != PATH):
        raise NotAllowed(f"{entry or static.type_name(value)}.{name} is not on the inspection allow-list")
    owner, found = static.lookup(type(value), name)
    if owner is None or not is_library_class(owner) or not is_library_code(found):
        raise NotAllowed(f"{static.type_name(value)}.{name} is not the library's own code")
    if not static.is_data_descriptor(found) and static.read_stored(value, name) is not static.MISSING:
        raise NotAllowed(f"{static.type_name(value)}.{name} was replaced on the object itself")
    return getattr(value, name)


def allows(value: Any, name: str, use: str = PATH) -> bool:
    allowed = ALLOW_LIST.get(entry_of(type(value)) or "", {}).get(name)
    return allowed is not None and (use != PATH or allowed == PATH)


def subscript_rule(value: Any) -> str | None:
    """What ``value[key]`` accepts, in words, if the allow-list lets paths subscript it."""
    return ALLOW_LIST.get(entry_of(type(value)) or "", {}).get(SUBSCRIPT)


def entry_of(cls: type) -> str | None:
    """The allow-list entry ``cls`` is, or descends from through real library classes only."""
    entries = _resolved_entries()
    for klass in static.mro(cls):
        for name, entry_class in entries:
            if klass is entry_class:
                return name
        if not is_library_class(klass):
            return None
    return None


def is_a(value: Any, entry: str) -> bool:
    """``value`` is an instance of the library class ``entry`` (e.g. ``matplotlib.lines.Line2D``),
    checked through real library classes only (see ``entry_of``)."""
    target = resolve(entry)
    if target is None:
        return False
    for klass in static.mro(type(value)):
        if klass is target:
            return True
        if not is_library_class(klass):
            return False
    return False


def is_scalar(value: Any) -> bool:
    """A library scalar (numpy number, dtype, pandas Timestamp…) whose repr is library code."""
    if any(is_a(value, name) for name in _NOT_SCALARS):
        return False
    if any(is_a(value, name) for name in SCALARS):
        return True
    pandas = _module_namespace("pandas")
    if pandas is not None and value is static.stored(pandas, "NaT"):
        return True
    return is_a(value, "pandas.api.extensions.ExtensionDtype")


def trusted_call(module: str, name: str) -> Any:
    """A function from a library module (e.g. ``numpy.array2string``), checked to be the library's."""
    namespace = _module_namespace(module)
    found = static.stored(namespace, name) if namespace is not None else static.MISSING
    is_class = found is not static.MISSING and static.is_subclass(type(found), type)
    if found is static.MISSING or not (is_library_class(found) if is_class else is_library_code(found)):
        raise NotAllowed(f"{module}.{name} is not available")
    return found


# -- recognising real library classes -----------------------------------------------------------

_entry_classes: dict[str, type] = {}
_verdicts: dict[int, tuple[weakref.ref, bool]] = {}


def _resolved_entries() -> list[tuple[str, type]]:
    for name in ALLOW_LIST:
        if name not in _entry_classes:
            found = resolve(name)
            if found is not None:
                _entry_classes[name] = found
    return list(_entry_classes.items())


def resolve(dotted: str) -> type | None:
    """The class a public name such as ``pandas.DataFrame`` denotes, if that library is imported."""
    module, _, name = dotted.rpartition(".")
    namespace = _module_namespace(module)
    if namespace is None:
        return None
    found = static.stored(namespace, name)
    return found if static.is_subclass(type(found), type) else None


def is_library_class(klass: type) -> bool:
    """Defined by a trusted library and reachable under its own module and qualname."""
    cached = _verdicts.get(id(klass))
    if cached is not None and cached[0]() is klass:
        return cached[1]
    verdict = _is_library_class(klass)
    try:
        _verdicts[id(klass)] = (weakref.ref(klass), verdict)
    except TypeError:
        pass
    return verdict


def _is_library_class(klass: type) -> bool:
    """Its module is a trusted library's, and it is the class that module and qualname name
    (or a C type of that library); a class merely claiming the name is not."""
    module = static.class_module(klass)
    if module.split(".")[0] not in TRUSTED_ROOTS:
        return _is_sympy_undefined_function(klass)
    if static.is_static_type(klass):
        return True  # made by the library's C code (user code only makes heap types)
    namespace = _module_namespace(module)
    if namespace is None:
        return False
    found: Any = static.stored(namespace, static.class_qualname(klass).split(".")[0])
    for part in static.class_qualname(klass).split(".")[1:]:
        if not static.is_subclass(type(found), type):
            return False
        found = static.class_dict(found).get(part, static.MISSING)
    return found is klass


def _is_sympy_undefined_function(klass: type) -> bool:
    """``sympy.Function('f')`` makes a class at run time (module None); trust it when sympy's
    metaclass made it and it carries data only (its keyword arguments could add methods)."""
    undefined = resolve("sympy.core.function.UndefinedFunction")
    if undefined is None or type(klass) is not undefined:
        return False
    for value in list(static.class_dict(klass).values()):
        if static.one_of(type(value), (types.FunctionType, staticmethod, classmethod, property)):
            return False
        if static.builtin_base(type(value)) is None and value is not None and not is_library_class(type(value)):
            return False
    return True


def is_library_code(found: Any) -> bool:
    """An accessor the library defined: its function's module is a trusted library's."""
    kind = type(found)
    if static.one_of(kind, _C_ACCESSORS):
        return True  # C code: defined by the extension type itself
    if static.is_subclass(kind, property):
        function = property.__dict__["fget"].__get__(found)
    elif kind is staticmethod or kind is classmethod:
        function = found.__func__
    elif kind is types.FunctionType:
        function = found
    elif is_library_class(kind):
        return True  # a library's own descriptor or callable object (e.g. a numpy ufunc)
    else:
        return False
    if type(function) is not types.FunctionType:
        return static.one_of(type(function), _C_ACCESSORS)
    module = function.__module__
    return type(module) is str and module.split(".")[0] in TRUSTED_ROOTS


_C_ACCESSORS = (
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.BuiltinFunctionType,
)


def _module_namespace(module: str) -> dict | None:
    found = sys.modules.get(module)
    if found is None or not static.is_subclass(type(found), types.ModuleType):
        return None
    return static.instance_dict(found)
