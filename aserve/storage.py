"""Where models live: the one seam between the server and a model store.

The lifecycle touches stored models in three ways only, and only through a
:class:`Storage`:

    listing = storage.list_versions(base_path)        # the source, every poll
    folder = storage.local_version(listing.versions[3])  # the loader, before TensorFlow
    text = storage.read_text(path)                    # a small file; None if absent

``local_version`` makes a version available as a local folder; everything after it (the
SavedModel loader, warm-up, per-version batching parameters) reads that folder. The local
file system is the one store today: its versions already are local folders. Every call
blocks and runs in a pool thread, never on the event loop.
"""

from __future__ import annotations

import os
from typing import Protocol

from aserve.errors import invalid_argument
from aserve.versions import Listing, parse_listing


class Storage(Protocol):
    def resolve(self, base_path: str) -> str:
        """The canonical spelling of a configured base path; raises ServingError if unusable."""
        ...

    def list_versions(self, base_path: str) -> Listing:
        """The version folders under ``base_path``. Raises OSError when it cannot be read."""
        ...

    def local_version(self, version_path: str) -> str:
        """A local folder holding the version at ``version_path``."""
        ...

    def read_text(self, path: str) -> str | None:
        """The text of a small file, or None if there is no such file."""
        ...


class LocalStorage:
    """Models in folders of the local file system."""

    def resolve(self, base_path: str) -> str:
        if "://" in base_path and not base_path.startswith("file://"):
            raise invalid_argument(
                f"base_path {base_path}: aserve serves models from local folders only"
            )
        return os.path.abspath(base_path.removeprefix("file://"))

    def list_versions(self, base_path: str) -> Listing:
        dirs: list[str] = []
        files: list[str] = []
        with os.scandir(base_path) as entries:
            for entry in entries:
                (dirs if entry.is_dir() else files).append(entry.name)
        return parse_listing(base_path, dirs, files)

    def local_version(self, version_path: str) -> str:
        return version_path

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None


LOCAL = LocalStorage()


def storage_for(base_path: str) -> Storage:
    """The store a base path names (by its URL scheme; a plain path is local)."""
    return LOCAL
