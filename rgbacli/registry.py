"""Name → implementation tables (preset sections, adapter kinds, backends, job kinds).

A new method registers its entry where it is defined; nothing that looks names up changes. An
unknown name is one `UsageError` that says where the name came from and which names exist.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from rgbacli.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered table of named entries of one kind (`what` names the kind in messages)."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` over a function or class."""
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def remove(self, name: str) -> T:
        """Take an entry out again (a plugin unloading, a test restoring the table)."""
        return self._entries.pop(name)

    def get(self, name: str, where: str) -> T:
        """The entry called `name`; `where` says who asked (e.g. "preset 'tiny' [transformer]")."""
        if name not in self._entries:
            raise UsageError(f"{where}: unknown {self.what} {name!r} (known: {', '.join(self._entries)})")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
