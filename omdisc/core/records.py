"""Data classes without the start-up cost of the standard library's: `record` is omdisc's
`@dataclass`. The omdiscd program defines some forty of them as it starts, and dataclasses compiles
three to six methods for each, one `exec` apiece: two fifths of the daemon's import time, all of
it before its JOIN (docs/architecture.md). Here each class gets one compiled method, its
`__init__`, as fast as dataclasses' own; equality, hashing, the repr and immutability are
functions shared by every class, over the fields' values taken at once (operator.attrgetter).

What omdisc uses of dataclasses, with the same meaning: `frozen` (assignment raises
FrozenInstanceError; the instance hashes by its compared fields) and `slots`, defaults and default
factories, a field's `init`, `repr` and `compare`, `__post_init__`, `replace()` and `fields()`. A
mutable record compares by value and is not hashable, as a dataclass is. mypy reads a record as a
dataclass (PEP 681, dataclass_transform).
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    R = TypeVar("R")
else:
    def dataclass_transform(**_: object) -> Callable[[R], R]:
        return lambda decorated: decorated


class _Missing:
    """No default given."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen record was assigned or deleted."""


class Field:
    """One field: its name, what it starts as, and where it takes part."""

    __slots__ = ("compare", "default", "default_factory", "init", "name", "repr")

    def __init__(self, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
                 init: bool = True, repr: bool = True, compare: bool = True) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING, init: bool = True,
          repr: bool = True, compare: bool = True) -> Any:
    """A field with more than a default, as dataclasses.field()."""
    return Field(default, default_factory, init, repr, compare)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[R] | None = None, /, *, frozen: bool = False, slots: bool = False) -> Any:
    """@record, @record(frozen=True, slots=True): as @dataclass with the same arguments."""
    def make(c: type[R]) -> type[R]:
        return _make(c, frozen, slots)
    return make if cls is None else make(cls)


def fields(obj: object) -> tuple[Field, ...]:
    """A record's (or a record class's) fields, in order."""
    found: tuple[Field, ...] | None = getattr(obj, "__record_fields__", None)
    if found is None:
        raise TypeError("fields() takes a record or a record class")
    return found


def replace(obj: R, /, **changes: Any) -> R:
    """A copy of `obj` with `changes`, made through its __init__ (so __post_init__ runs again)."""
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is not given to __init__: replace() cannot set it")
        elif f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


# --- making a record class ---------------------------------------------------------------------------

MADE_HERE = ("__init__", "__eq__", "__hash__", "__setattr__", "__delattr__", "__getstate__", "__setstate__")


def _make(cls: type[R], frozen: bool, slots: bool) -> type[R]:
    own = [name for name in MADE_HERE if name in cls.__dict__]
    if own or any(hasattr(base, "__record_fields__") for base in cls.__mro__[1:]):
        # what dataclasses would keep, or merge from a base record: not ours to guess
        raise TypeError(f"{cls.__qualname__}: a record neither defines {', '.join(own) or 'these'} itself "
                        "nor derives from another record")
    specs = _fields(cls)
    if slots:
        cls = _with_slots(cls, specs)
    key = _key(tuple(f.name for f in specs if f.compare))
    made: dict[str, Any] = {"__record_fields__": specs, "__init__": _init(cls, specs, frozen), "__eq__": _eq_of(key),
                            "__hash__": _hash_of(key) if frozen else None}
    if "__repr__" not in cls.__dict__:
        made["__repr__"] = _repr_of(tuple(f.name for f in specs if f.repr))
    if frozen:
        made |= {"__setattr__": _frozen_set, "__delattr__": _frozen_delete}
    if frozen and slots:  # copy and pickle set the slots through __setstate__, not __setattr__
        made |= {"__getstate__": _slots_state, "__setstate__": _set_slots_state}
    for name, value in made.items():
        setattr(cls, name, value)
    return cls


def _fields(cls: type) -> tuple[Field, ...]:
    """The class's own annotated names, each with its Field (a bare default becomes one)."""
    specs = []
    for name in cls.__dict__.get("__annotations__", {}):  # noqa: RUF063 - inspect: the daemon defers it
        if name.startswith("__record"):
            raise TypeError(f"{cls.__qualname__}.{name}: names beginning with __record are the records' own")
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        if spec.default is not MISSING and type(spec.default).__hash__ is None:  # as dataclasses: shared and mutable
            raise ValueError(f"mutable default {type(spec.default).__name__} for field {name}: use default_factory")
        spec.name = name
        specs.append(spec)
        if isinstance(value, Field):  # the class attribute is the default, as dataclasses leaves it
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
    return tuple(specs)


def _with_slots(cls: type[R], specs: tuple[Field, ...]) -> type[R]:
    """The same class made again with __slots__ (they must be there when a class is made)."""
    names = tuple(f.name for f in specs)
    body = {k: v for k, v in cls.__dict__.items() if k not in (*names, "__dict__", "__weakref__")}
    body["__slots__"] = names
    remade: type[R] = type(cls.__name__, cls.__bases__, body)
    remade.__qualname__ = cls.__qualname__
    return remade


def _init(cls: type, specs: tuple[Field, ...], frozen: bool) -> Callable[..., None]:
    """__init__, compiled for this class: its parameters, defaults and factories, assignments."""
    # the names the compiled code uses besides the fields' begin with __record, which no field may
    scope: dict[str, Any] = {"__record_missing": MISSING, "__record_set": object.__setattr__}
    params, lines = [], []
    for f in specs:
        value, default, factory = f.name, f"__record_default_{f.name}", f"__record_factory_{f.name}"
        if f.default is not MISSING:
            scope[default] = f.default
        if f.default_factory is not MISSING:
            scope[factory] = f.default_factory
        if f.init:
            params.append(f.name if f.default is MISSING and f.default_factory is MISSING
                          else f"{f.name}={default}" if f.default is not MISSING else f"{f.name}=__record_missing")
            if f.default_factory is not MISSING:
                value = f"{factory}() if {f.name} is __record_missing else {f.name}"
        elif f.default is not MISSING:
            value = default
        elif f.default_factory is not MISSING:
            value = f"{factory}()"
        else:
            continue  # neither given nor defaulted: __post_init__ sets it
        lines.append(f"__record_set(self, {f.name!r}, {value})" if frozen else f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(lines or ["pass"])
    exec(source, scope)  # our own field names, as dataclasses does
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _key(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """The compared fields' values of an instance, as one tuple (compared as dataclasses compare:
    identity first, so a NaN equals itself)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


def _eq_of(key: Callable[[Any], Any]) -> Callable[[Any, object], Any]:
    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented
    return __eq__


def _hash_of(key: Callable[[Any], Any]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(key(self))
    return __hash__


def _repr_of(names: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({shown})"
    return __repr__


def _slots_state(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in self.__record_fields__)


def _set_slots_state(self: Any, state: tuple[Any, ...]) -> None:
    for f, value in zip(self.__record_fields__, state, strict=True):
        object.__setattr__(self, f.name, value)


def _frozen_set(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delete(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
