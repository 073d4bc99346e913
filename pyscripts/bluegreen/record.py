"""Value classes without ``dataclasses``: :class:`Record` reads a class's annotated fields and
defaults once, when the class is made, and builds nothing with ``exec``.

Why not ``dataclasses``: importing it (with ``inspect``) and generating the methods of the
package's classes cost about 30 ms at every start of the CLI on the machines we measured, a
third of a rollback's budget (docs/benchmarks.md). What the package needs of it is here:
positional or keyword fields with defaults (a subclass may give an inherited field a new one),
``factory`` for mutable defaults (a mutable default itself is refused when the class is made), ``frozen``,
equality, hashing of frozen records, ``repr``, :func:`replace` and :func:`asdict`.

    class Server(Record, frozen=True):
        address: str
        port: int
        weight: int | None = None
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs 5 ms of every start of the CLI: only type checkers read it
if TYPE_CHECKING:
    from typing import Any, ClassVar, TypeVar, dataclass_transform

    R = TypeVar("R", bound="Record")
else:
    def dataclass_transform(**_: object) -> object:
        return lambda cls: cls

_MISSING = object()


class factory:
    """A default made anew for each record (``factory(dict)``, ``factory(list)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make


def _checked(cls: type, name: str, default: Any) -> Any:
    """``default``, unless it is mutable (unhashable, as ``dataclasses`` judges it): one list
    or dict would be shared by every record."""
    if not isinstance(default, factory) and type(default).__hash__ is None:
        raise TypeError(f"{cls.__name__}.{name}: mutable default {type(default).__name__} "
                        f"would be shared by every record; use factory({type(default).__name__})")
    return default


@dataclass_transform(kw_only_default=False, field_specifiers=(factory,))
class Record:
    """Base of the package's value classes; ``frozen=True`` forbids assignment after init and
    makes records hashable. Fields whose name starts with ``_`` are left out of equality and
    ``repr`` (caches)."""

    __fields__: ClassVar[tuple[str, ...]] = ()
    __defaults__: ClassVar[dict[str, Any]] = {}
    __frozen__: ClassVar[bool] = False

    def __init_subclass__(cls, frozen: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = list(cls.__fields__)
        defaults = dict(cls.__defaults__)
        own = vars(cls)
        for name in fields:  # a subclass's new default for an inherited field
            if name in own:
                defaults[name] = _checked(cls, name, own[name])
                delattr(cls, name)
        for name, note in own.get("__annotations__", {}).items():
            if "ClassVar" in str(note) or name in fields:
                continue
            fields.append(name)
            if name in own:
                defaults[name] = _checked(cls, name, own[name])
                delattr(cls, name)  # the instance holds every field
            elif defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows "
                                f"one with a default")
        cls.__fields__, cls.__defaults__ = tuple(fields), defaults
        cls.__frozen__ = frozen or cls.__frozen__
        if not cls.__frozen__:
            cls.__hash__ = None  # type: ignore[assignment] - mutable: unhashable, as a dataclass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self.__fields__
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes {len(fields)} fields, got {len(args)}")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in fields or name in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {name!r}")
            values[name] = value
        for name in fields:
            value = values.get(name, _MISSING)
            if value is _MISSING:
                value = self.__defaults__.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}: missing field {name!r}")
                if isinstance(value, factory):
                    value = value.make()
            object.__setattr__(self, name, value)
        post = getattr(self, "__post_init__", None)
        if post:
            post()

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__frozen__:
            raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self.__frozen__:
            raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")
        object.__delattr__(self, name)

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.__fields__ if not n.startswith("_"))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared() == other._compared()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__, self._compared()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__fields__ if not n.startswith("_"))
        return f"{type(self).__name__}({shown})"


def replace(record: R, **changes: Any) -> R:
    """A copy of ``record`` with ``changes`` (as ``dataclasses.replace``)."""
    values = {n: getattr(record, n) for n in record.__fields__}
    unknown = changes.keys() - values.keys()
    if unknown:
        raise TypeError(f"{type(record).__name__}: unknown field(s) {', '.join(sorted(unknown))}")
    return type(record)(**(values | changes))


def asdict(record: Record) -> dict[str, Any]:
    """The fields of ``record`` (not recursive: the package's records hold plain values)."""
    return {n: getattr(record, n) for n in record.__fields__}
