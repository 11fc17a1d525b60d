"""Names for servables and for what a request asks for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ServableId:
    """One version of one model."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


@dataclass(frozen=True, slots=True)
class ServableRequest:
    """What a request names: the latest version, a specific version, or a label.

    ``str()`` gives TF Serving's spelling, used in its error texts:
    ``Latest(m)``, ``Specific(m, 3)``.
    """

    name: str
    version: int | None = None
    label: str | None = None

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
