"""Version folders and version policies: which versions of a model should be served.

Pure functions over directory listings; listing a folder is the store's job
(:mod:`aserve.storage`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

_VERSION_NAME = re.compile(r"\d{1,18}")
# a base path with one of these at its top is itself a SavedModel, not a folder of versions
SAVED_MODEL_FILES: Final = frozenset({"saved_model.pb", "saved_model.pbtxt"})


@dataclass(frozen=True, slots=True)
class Latest:
    """Serve the ``num_versions`` highest versions (TF: 0 counts as 1)."""

    num_versions: int = 1


@dataclass(frozen=True, slots=True)
class AllVersions:
    """Serve every version found."""


@dataclass(frozen=True, slots=True)
class Specific:
    """Serve exactly these versions, when they exist."""

    versions: frozenset[int]


VersionPolicy = Latest | AllVersions | Specific


@dataclass(frozen=True, slots=True)
class Listing:
    """What a base path holds: version -> folder path, plus the entries ignored."""

    versions: Mapping[int, str]
    ignored: tuple[str, ...]
    unversioned: bool = False  # the base path holds one SavedModel directly: it is version 1


def version_of(entry: str) -> int | None:
    """``"00000123"`` -> 123; anything that is not a plain non-negative integer -> None."""
    return int(entry) if _VERSION_NAME.fullmatch(entry) else None


def parse_listing(base_path: str, dirs: Iterable[str], files: Iterable[str] = ()) -> Listing:
    """The versions in a base path's entries. Without any version folder, a base path that
    holds a SavedModel itself (``saved_model.pb`` at its top, a common KServe mistake) is
    served as version 1; TF Serving finds no version there."""
    versions: dict[int, str] = {}
    file_names = set(files)
    ignored = sorted(file_names)
    for entry in sorted(dirs):
        version = version_of(entry)
        if version is None:
            ignored.append(entry)
        elif version not in versions:  # "1" and "001": the first spelling wins, as in TF
            versions[version] = os.path.join(base_path, entry)
    if not versions and not SAVED_MODEL_FILES.isdisjoint(file_names):
        return Listing(versions={1: base_path}, ignored=(), unversioned=True)
    return Listing(versions=versions, ignored=tuple(sorted(ignored)))


def aspired_versions(policy: VersionPolicy, found: Mapping[int, str]) -> dict[int, str]:
    """The versions ``policy`` wants from ``found`` (TF's AspireLatest/All/SpecificVersions)."""
    match policy:
        case Latest(num_versions=n):
            chosen = sorted(found, reverse=True)[: max(n, 1)]
        case AllVersions():
            chosen = list(found)
        case Specific(versions=wanted):
            chosen = [v for v in found if v in wanted]
    return {v: found[v] for v in sorted(chosen)}


def missing_specific_versions(policy: VersionPolicy, found: Mapping[int, str]) -> list[int]:
    if isinstance(policy, Specific):
        return sorted(v for v in policy.versions if v not in found)
    return []
