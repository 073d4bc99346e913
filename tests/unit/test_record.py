"""bluegreen.record: the package's value classes without dataclasses."""

from __future__ import annotations

import pytest

from bluegreen.record import Record, asdict, factory, replace


class Point(Record, frozen=True):
    x: int
    y: int = 0
    tags: dict[str, str] = factory(dict)
    _cache: str | None = None


class Counter(Record):
    n: int = 0


def test_fields_positional_keyword_and_defaults():
    p = Point(1, tags={"a": "b"})
    assert (p.x, p.y, p.tags, p._cache) == (1, 0, {"a": "b"}, None)
    assert Point.__fields__ == ("x", "y", "tags", "_cache")


def test_a_factory_default_is_made_for_each_record():
    a, b = Point(1), Point(2)
    assert a.tags == {} and a.tags is not b.tags


def test_missing_unknown_and_repeated_fields_are_refused():
    with pytest.raises(TypeError, match="missing field 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected or repeated field 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="unexpected or repeated field 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 4 fields"):
        Point(1, 2, {}, None, 5)


class Pair(Record, frozen=True):
    a: int
    b: str = ""


def test_frozen_records_refuse_assignment_and_hash_by_value():
    p = Point(1, 2)
    with pytest.raises(AttributeError, match="frozen"):
        p.x = 3
    assert p == Point(1, 2) and p != Point(2, 2)
    assert Point(1, 2, _cache="x") == Point(1, 2)  # an underscore field is a cache
    assert hash(Pair(1, "x")) == hash(Pair(1, "x")) and len({Pair(1), Pair(1), Pair(2)}) == 2


def test_mutable_records_change_and_are_unhashable():
    c = Counter()
    c.n += 1
    assert c == Counter(1) and c != Point(1)
    with pytest.raises(TypeError):
        hash(c)


def test_repr_replace_asdict():
    p = Point(1, 2)
    assert repr(p) == "Point(x=1, y=2, tags={})"
    q = replace(p, y=5)
    assert (q.x, q.y, p.y) == (1, 5, 2)
    assert asdict(q) == {"x": 1, "y": 5, "tags": {}, "_cache": None}
    with pytest.raises(TypeError, match="unknown field"):
        replace(p, z=1)


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="without a default"):
        class Bad(Record):
            a: int = 0
            b: int


@pytest.mark.parametrize("default", [[], {}, set(), bytearray(), Counter()])
def test_a_mutable_default_is_refused_when_the_class_is_made(default):
    with pytest.raises(TypeError, match=r"Bad\.items: mutable default .* use factory\("):
        type("Bad", (Record,), {"__annotations__": {"items": "list"}, "items": default})


def test_an_immutable_default_and_a_factory_are_accepted():
    class Fine(Record):
        names: tuple[str, ...] = ()
        seen: frozenset[str] = frozenset()
        items: list[int] = factory(list)

    a, b = Fine(), Fine()
    a.items.append(1)
    assert b.items == [] and a.names == () and a.seen == frozenset()


def test_a_subclass_overrides_an_inherited_default():
    class Base(Record):
        n: int = 0
        label: str = "base"

    class Annotated(Base):
        n: int = 5  # re-declared, as dataclasses wants

    class Assigned(Base):
        label = "sub"  # assigned only

    assert (Annotated().n, Annotated().label) == (5, "base")
    assert (Assigned().n, Assigned().label) == (0, "sub")
    assert Base().n == 0 and Base().label == "base"
    assert Annotated.__fields__ == Base.__fields__ == ("n", "label")
    with pytest.raises(TypeError, match="mutable default"):
        type("Worse", (Base,), {"label": []})
