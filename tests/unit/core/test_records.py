"""omdisc's records (omdisc/core/records.py) behave as the standard library's dataclasses with the same
arguments: the same class body is made both ways, and what a caller sees is compared."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from omdisc.core import records
from omdisc.core.auth import Keyring
from omdisc.core.config import Config
from omdisc.core.protocol import Message, MsgType
from omdisc.core.table import Entry

Maker = Callable[..., Any]
BOTH: list[tuple[str, Maker, Callable[..., Any], Callable[..., Any]]] = [
    ("records", records.record, records.field, records.replace),
    ("dataclasses", dataclasses.dataclass, dataclasses.field, dataclasses.replace),
]


def node_class(make: Maker, field: Callable[..., Any], **how: bool) -> type:
    """One class body, made by `make` (record or dataclass) with `how` (frozen, slots)."""
    class Node:
        """A node as a test sees it."""

        node_id: int
        name: str = "n"
        addresses: list[str] = field(default_factory=list)
        secret: bytes = field(default=b"k", repr=False)
        heard: int = field(default=0, compare=False)
        derived: str = field(init=False, repr=False, compare=False)

        def __post_init__(self) -> None:
            object.__setattr__(self, "derived", f"{self.name}#{self.node_id}")
    return make(**how)(Node)  # type: ignore[no-any-return]


HOW = [{}, {"frozen": True}, {"slots": True}, {"frozen": True, "slots": True}]


@pytest.mark.parametrize("how", HOW, ids=lambda h: "+".join(h) or "plain")
def test_a_record_is_what_a_dataclass_is(how: dict[str, bool]) -> None:
    seen = []
    for _, make, field, replace in BOTH:
        cls = node_class(make, field, **how)
        a, b = cls(3, "a", ["x"]), cls(3, "a", ["x"], heard=9)
        c = replace(a, name="c")
        fresh = cls(1), cls(2)
        fresh[0].addresses.append("y")
        seen.append((
            copy.copy(a) == a, copy.deepcopy(a) == a, cls(math.nan, "n") == cls(math.nan, "n"),  # before a changes
            repr(a), a == b, a != cls(4, "a", ["x"]), a == (3, "a", ["x"]), c.name, c.derived, c.addresses,
            fresh[1].addresses, cls.__qualname__, cls.__init__.__qualname__.rsplit(".", 1)[-1],
            hasattr(a, "__dict__"), _class_attribute(cls, "name"), _class_attribute(cls, "addresses"),
            _hash_or_error(a) == _hash_or_error(b), _error_of(lambda: setattr(a, "name", "z")),  # noqa: B023
            _error_of(lambda: delattr(a, "name")), _error_of(lambda: cls()),  # noqa: B023
            _error_of(lambda: cls(1, nope=2)), _error_of(lambda: replace(a, derived="x")),  # noqa: B023
            _error_of(lambda: make(**how)(type("Bad", (), {"__annotations__": {"b": "bytearray"},  # noqa: B023
                                                             "b": bytearray()}))),
        ))
    assert seen[0] == seen[1]


def _class_attribute(cls: type, name: str) -> object:
    """What the class itself says of a field: its default, a slot, or nothing."""
    value = getattr(cls, name, None)
    return "a slot" if type(value).__name__ == "member_descriptor" else value


def _hash_or_error(obj: object) -> object:
    try:
        return hash(obj)
    except TypeError as e:
        return type(e).__name__


def _error_of(call: Callable[[], object]) -> str:
    try:
        call()
    except (AttributeError, TypeError, ValueError) as e:
        kind = "AttributeError" if isinstance(e, AttributeError) else type(e).__name__
        return kind  # FrozenInstanceError is an AttributeError in both
    return "no error"


def test_a_frozen_record_refuses_assignment_with_frozen_instance_error() -> None:
    entry = Entry(**{f.name: 0 for f in records.fields(Entry)})
    with pytest.raises(records.FrozenInstanceError, match="cannot assign to field"):
        entry.node_id = 5  # type: ignore[misc]


def test_a_mutable_default_is_refused_as_dataclasses_refuses_it() -> None:
    class Bad:
        """A list shared by every instance."""

        items: list[int] = []  # noqa: RUF012 - the mistake under test
    with pytest.raises(ValueError, match="mutable default"):
        records.record(Bad)


def test_fields_and_replace_on_omdisc_records() -> None:
    assert [f.name for f in records.fields(Config)][:2] == ["interfaces", "multicast_ttl"]
    msg = Message(MsgType.ANNOUNCE, 7, 1, 1, ())
    assert records.replace(msg, seq=2) == Message(MsgType.ANNOUNCE, 7, 1, 2, ())
    assert hash(msg) == hash(Message(MsgType.ANNOUNCE, 7, 1, 1, ()))
    ring = Keyring((b"k" * 32,))
    assert "k" * 32 not in repr(ring) and len(ring.by_id) == 1  # keys never in a repr; __post_init__ ran
    with pytest.raises(TypeError, match="record"):
        records.fields(object())


def test_what_a_record_cannot_keep_as_dataclasses_would_is_refused() -> None:
    """Its own __init__, __eq__ or __hash__ (dataclasses keeps them), or a base record's fields
    (dataclasses merges them): refused at once, not silently made otherwise."""
    class Own:
        """Makes itself."""

        a: int

        def __init__(self) -> None:
            self.a = 1

    class Base:
        """A base record."""

        a: int

    class Derived(records.record(Base)):  # type: ignore[misc]
        """Its fields would be Base's and its own."""

        b: int
    for cls in (Own, Derived):
        with pytest.raises(TypeError, match="a record neither defines"):
            records.record(cls)
