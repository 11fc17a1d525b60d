"""Names for servables and for what a request asks for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, order=True)
class ServableId:
    """One version of one model."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


class ServableRequest:
    """What a request names: the latest version, a specific version, or a label.

    ``str()`` gives TF Serving's spelling, used in its error texts:
    ``Latest(m)``, ``Specific(m, 3)``. Made per gRPC request, so a plain class with
    read-only attributes (a compiled dataclass's ``__init__`` is interpreted), compared
    and hashed by value.
    """

    __slots__ = ("name", "version", "label")

    def __init__(self, name: str, version: int | None = None, label: str | None = None) -> None:
        self.name: Final = name
        self.version: Final = version
        self.label: Final = label

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServableRequest):
            return NotImplemented
        return (self.name, self.version, self.label) == (other.name, other.version, other.label)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.label))

    def __repr__(self) -> str:
        name, version, label = self.name, self.version, self.label
        return f"ServableRequest(name={name!r}, version={version!r}, label={label!r})"

    @classmethod
    def latest(cls, name: str) -> ServableRequest:
        return cls(name)

    @classmethod
    def specific(cls, name: str, version: int) -> ServableRequest:
        return cls(name, version=version)

    @classmethod
    def labeled(cls, name: str, label: str) -> ServableRequest:
        return cls(name, label=label)

    def __str__(self) -> str:
        if self.version is not None:
            return f"Specific({self.name}, {self.version})"
        if self.label is not None:
            return f"Labeled({self.name}, {self.label})"
        return f"Latest({self.name})"
