"""Looking at objects without running their code: types, class dictionaries, instance storage.

Inspection runs on a server thread beside the user's cell, and at the `read` level it must not
run the notebook's code. Python runs user code in surprising places: ``isinstance`` reads
``obj.__class__`` (a property can answer), ``len``/``repr``/``iter`` of a ``list`` subclass call
its overrides, ``getattr`` runs properties, ``__getattr__`` and ``__getattribute__``, and even
``inspect.getattr_static`` reads ``obj.__dict__`` through a class's own ``__dict__`` property.

So everything here goes through CPython's own descriptors, read off ``type`` itself:
``type(x)`` (cannot be faked), a class's MRO and namespace, an instance's genuine ``__dict__``
(the interpreter's getset descriptor, never a class's override) and ``__slots__`` members.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

MISSING: Any = object()

_TYPE_DICT = type.__dict__["__dict__"]
_TYPE_MRO = type.__dict__["__mro__"]
_TYPE_MODULE = type.__dict__["__module__"]
_TYPE_QUALNAME = type.__dict__["__qualname__"]
_TYPE_FLAGS = type.__dict__["__flags__"]
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: every class made by a class statement or type()
_OBJECT_DICT_TYPES = (types.GetSetDescriptorType, types.MemberDescriptorType)
# Attribute access of these is CPython's own (generic, or module __getattr__ for missing names).
_PLAIN_GETATTRIBUTE = (object, type, types.ModuleType)
# Builtin types whose storage the C-level methods read, also for subclasses.
BUILTIN_BASES = (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, complex)


def mro(cls: type) -> tuple[type, ...]:
    return _TYPE_MRO.__get__(cls, type(cls))


def class_dict(cls: type) -> Any:
    return _TYPE_DICT.__get__(cls, type(cls))


def class_module(cls: type) -> str:
    module = _TYPE_MODULE.__get__(cls, type(cls))
    return module if type(module) is str else "?"


def class_qualname(cls: type) -> str:
    return _TYPE_QUALNAME.__get__(cls, type(cls))


def type_name(value: Any) -> str:
    """``pandas.DataFrame``, ``Model`` (for __main__), ``int``: short and code-free."""
    cls = type(value)
    known = _builtin_names.get(id(cls))
    if known is not None:
        return known
    module, qualname = class_module(cls), class_qualname(cls)
    if module in ("builtins", "__main__"):
        return qualname
    return f"{module.split('.')[0]}.{qualname}"


# Builtin types live as long as the interpreter: their ids are safe cache keys.
_builtin_names = {id(cls): cls.__qualname__ for cls in (int, float, complex, bool, str, bytes, list, tuple, dict, set, type(None))}


def one_of(cls: type, classes: tuple[type, ...]) -> bool:
    """``cls in classes`` by identity: ``in`` would call a metaclass's ``__eq__``/``__hash__``."""
    for klass in classes:
        if cls is klass:
            return True
    return False


def is_subclass(cls: type, base: type) -> bool:
    """``issubclass`` without ``__subclasscheck__`` (a metaclass may define one)."""
    return any(klass is base for klass in mro(cls))


def builtin_base(cls: type) -> type | None:
    """The builtin container or scalar type ``cls`` stores its data as, if any."""
    for klass in mro(cls):
        for base in BUILTIN_BASES:
            if klass is base:
                return base
    return None


def lookup(cls: type, name: str) -> tuple[type | None, Any]:
    """(owner, attribute) from the class namespaces along the MRO, as the interpreter finds it."""
    for klass in mro(cls):
        namespace = class_dict(klass)
        if name in namespace:
            return klass, namespace[name]
    return None, MISSING


def defines(cls: type, name: str, ignore: tuple[type, ...] = (object,)) -> type | None:
    """The class along ``cls``'s MRO that defines ``name``, unless it is one of ``ignore``."""
    owner, _ = lookup(cls, name)
    return owner if owner is not None and not one_of(owner, ignore) else None


def is_static_type(cls: type) -> bool:
    """Defined in C (not a heap type): Python code cannot create one, nor change its methods."""
    return not _TYPE_FLAGS.__get__(cls, type(cls)) & _HEAP_TYPE


def has_custom_getattribute(cls: type) -> bool:
    """Attribute reads run code of the class's own (CPython's builtins list the generic one)."""
    owner = defines(cls, "__getattribute__")
    if owner is None or one_of(owner, _PLAIN_GETATTRIBUTE):
        return False
    return not (is_static_type(owner) and class_module(owner) == "builtins")


def has_method(attribute: Any, name: str) -> bool:
    return lookup(type(attribute), name)[0] is not None


def is_data_descriptor(attribute: Any) -> bool:
    return has_method(attribute, "__set__") or has_method(attribute, "__delete__")


def instance_dict(value: Any) -> dict | None:
    """The object's own attribute storage, read through the interpreter's descriptor only."""
    _, descriptor = lookup(type(value), "__dict__")
    if not one_of(type(descriptor), _OBJECT_DICT_TYPES):
        return None  # no __dict__, or a class that overrides it with its own code
    try:
        storage = type(descriptor).__get__(descriptor, value, type(value))
    except AttributeError:
        return None
    return storage if builtin_base(type(storage)) is dict else None


def stored(storage: dict, name: str) -> Any:
    return dict.get(storage, name, MISSING)


def slot_value(value: Any, descriptor: Any) -> Any:
    """A ``__slots__`` member's value (C-level read), or MISSING when unset."""
    try:
        return types.MemberDescriptorType.__get__(descriptor, value, type(value))
    except AttributeError:
        return MISSING


def read_stored(value: Any, name: str) -> Any:
    """An attribute the object stores itself (instance dict or slot), else MISSING."""
    _, attribute = lookup(type(value), name)
    if type(attribute) is types.MemberDescriptorType:
        return slot_value(value, attribute)
    storage = instance_dict(value)
    return stored(storage, name) if storage is not None else MISSING


@dataclass
class Attribute:
    """What ``value.name`` is, found without running code.

    ``value`` is set when the answer needs no code (a stored attribute, a slot, a plain class
    attribute, a method bound by the interpreter); otherwise ``kind`` says what would run.
    """

    kind: str
    owner: type | None = None
    value: Any = MISSING


def attribute(value: Any, name: str) -> Attribute:
    """Mirror ``object.__getattribute__`` with every step that could run code left out."""
    cls = type(value)
    if has_custom_getattribute(cls):
        return Attribute("custom __getattribute__", defines(cls, "__getattribute__"))
    owner, found = lookup(cls, name)
    if found is not MISSING and is_data_descriptor(found):
        if type(found) is types.MemberDescriptorType:
            slot = slot_value(value, found)
            return Attribute("slot", owner, slot) if slot is not MISSING else Attribute("unset slot", owner)
        return Attribute(descriptor_kind(found), owner)
    storage = instance_dict(value)
    if storage is not None:
        own = stored(storage, name)
        if own is not MISSING:
            return Attribute("attribute", cls, own)
    if found is not MISSING:
        return class_level(found, owner, value, cls)
    getattr_owner = defines(cls, "__getattr__")
    if getattr_owner is not None:
        return Attribute("__getattr__", getattr_owner)
    if cls is types.ModuleType and storage is not None and stored(storage, "__getattr__") is not MISSING:
        return Attribute("module __getattr__", cls)
    return Attribute("missing", cls)


def class_level(found: Any, owner: type | None, instance: Any, cls: type) -> Attribute:
    """An attribute found on the class: plain values and methods are safe to hand out."""
    kind = type(found)
    if kind is types.FunctionType:
        return Attribute("method", owner, types.MethodType(found, instance))
    if kind is staticmethod:
        return Attribute("static method", owner, found.__func__)
    if kind is classmethod and type(found.__func__) is types.FunctionType:
        return Attribute("class method", owner, types.MethodType(found.__func__, cls))
    if one_of(kind, (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)):
        return Attribute("method", owner, kind.__get__(found, instance, cls))
    if has_method(found, "__get__"):
        return Attribute(descriptor_kind(found), owner)
    return Attribute("class attribute", owner, found)


def descriptor_kind(found: Any) -> str:
    kind = type(found)
    if is_subclass(kind, property):
        return "property"
    if kind is functools.cached_property:
        return "cached_property (not computed yet)"
    if kind is types.GetSetDescriptorType:
        return "computed attribute (C)"
    return f"descriptor ({class_qualname(kind)})"


def class_attribute(cls: type, name: str) -> Attribute:
    """``SomeClass.name``: the class's own namespaces, and the metaclass only as far as is safe."""
    meta = type(cls)
    if has_custom_getattribute(meta):
        return Attribute("custom __getattribute__ (metaclass)", defines(meta, "__getattribute__"))
    if name in ("__name__", "__qualname__", "__module__", "__mro__", "__bases__"):
        return Attribute("class attribute", cls, type.__dict__[name].__get__(cls, type))
    meta_owner, meta_found = lookup(meta, name)
    if meta_owner is not None and not one_of(meta_owner, (type, object)) and is_data_descriptor(meta_found):
        return Attribute(descriptor_kind(meta_found) + " (metaclass)", meta_owner)
    owner, found = lookup(cls, name)
    if found is MISSING:
        if defines(meta, "__getattr__", (object, type)):
            return Attribute("__getattr__ (metaclass)", meta)
        return Attribute("missing", cls)
    kind = type(found)
    if kind is types.FunctionType or is_subclass(kind, property) or not has_method(found, "__get__"):
        return Attribute("class attribute", owner, found)
    if one_of(kind, (staticmethod, classmethod)):
        return Attribute(f"{'static' if kind is staticmethod else 'class'} method", owner, found.__func__)
    return Attribute(descriptor_kind(found), owner)


def members(cls: type, limit: int = 40) -> dict[str, str]:
    """Public names a class offers, each with what it is (method, property, attribute…)."""
    result: dict[str, str] = {}
    for klass in mro(cls):
        if klass is object:
            continue
        for name, found in list(class_dict(klass).items()):
            if type(name) is not str or name.startswith("_") or name in result:
                continue
            result[name] = member_kind(found)
            if len(result) >= limit:
                return result
    return result


def member_kind(found: Any) -> str:
    kind = type(found)
    if one_of(kind, (types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)):
        return "method"
    if kind is staticmethod:
        return "static method"
    if one_of(kind, (classmethod, types.ClassMethodDescriptorType)):
        return "class method"
    if has_method(found, "__get__"):
        return descriptor_kind(found)
    return "class attribute"
