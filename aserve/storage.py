"""Where models live: the one seam between the server and a model store.

The lifecycle touches stored models in four ways only, and only through a
:class:`Storage` that :meth:`Stores.for_path` picks by the path's URL scheme:

    listing = storage.list_versions(base_path)           # the source, every poll
    folder = storage.local_version(listing.versions[3])  # the loader, before TensorFlow
    ... load the SavedModel in ``folder``; later unload it ...
    storage.release_version(listing.versions[3])         # after the unload (or a failed load)

``local_version`` makes a version available as a local folder; everything after it (the
SavedModel loader, warm-up, per-version batching parameters) reads that folder. The local
file system's versions already are local folders; a remote store (``s3://``, ``gs://``,
``oss://``, through fsspec: :mod:`aserve.remote`) downloads the version into the model cache
and removes that copy on ``release_version``. Every call blocks and runs in a pool thread,
never on the event loop.

A store that cannot be listed raises :class:`StoreUnreachable` (the source keeps serving what
is loaded and logs every failed poll); a base path that does not exist raises
FileNotFoundError (or another OSError), as a missing local folder does.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import tempfile
import threading
from typing import TYPE_CHECKING, Final, Protocol

from aserve.errors import invalid_argument
from aserve.versions import Listing, parse_listing

if TYPE_CHECKING:
    from aserve.remote import RemoteStorage

# URL scheme -> (the fsspec back end it needs, the aserve extra that installs it)
BACK_ENDS: Final = {
    "s3": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "oss": ("ossfs", "oss"),
}
LOCAL_SCHEMES: Final = ("", "file")


class StoreUnreachable(OSError):
    """A remote store could not be listed or read (network, credentials, the service)."""


class Storage(Protocol):
    def resolve(self, base_path: str) -> str:
        """The canonical spelling of a configured base path; raises ServingError if unusable."""
        ...

    def list_versions(self, base_path: str) -> Listing:
        """The version folders under ``base_path``. Raises OSError when it cannot be read."""
        ...

    def local_version(self, version_path: str) -> str:
        """A local folder holding the complete version at ``version_path``."""
        ...

    def release_version(self, version_path: str) -> None:
        """The folder ``local_version`` gave is no longer used (the version was unloaded)."""
        ...

    def read_text(self, path: str) -> str | None:
        """The text of a small file, or None if there is no such file."""
        ...


class LocalStorage:
    """Models in folders of the local file system."""

    def resolve(self, base_path: str) -> str:
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

    def release_version(self, version_path: str) -> None:
        return None

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None


LOCAL = LocalStorage()


def scheme_of(path: str) -> str:
    """``"s3://b/m"`` -> ``"s3"``; a plain path -> ``""``."""
    scheme, sep, _ = path.partition("://")
    return scheme.lower() if sep and scheme.isidentifier() else ""


def is_remote(path: str) -> bool:
    return scheme_of(path) not in LOCAL_SCHEMES


def resolve_base_path(base_path: str) -> str:
    """The canonical base path: an absolute folder, or a URL without a trailing slash.

    Pure (no I/O): a remote scheme is accepted when its fsspec back end is installed.
    """
    scheme = scheme_of(base_path)
    if scheme in LOCAL_SCHEMES:
        return LOCAL.resolve(base_path)
    if scheme not in BACK_ENDS:
        known = ", ".join(f"{s}://" for s in BACK_ENDS)
        raise invalid_argument(
            f"base_path {base_path}: unsupported store {scheme}:// (aserve reads local folders, "
            f"file:// and {known})"
        )
    module, extra = BACK_ENDS[scheme]
    if importlib.util.find_spec("fsspec") is None or importlib.util.find_spec(module) is None:
        raise invalid_argument(
            f"base_path {base_path}: {scheme}:// needs the {module} package: "
            f"pip install 'aserve[{extra}]'"
        )
    rest = base_path.partition("://")[2].strip("/")
    if not rest:
        raise invalid_argument(f"base_path {base_path}: names no bucket")
    return f"{scheme}://{posixpath.normpath(rest)}"


def within_roots(base_path: str, roots: tuple[str, ...]) -> bool:
    """Whether ``base_path`` lies under one of ``roots`` (folders with symlinks resolved, or
    URLs compared segment by segment; a URL never lies under a folder, nor the reverse)."""
    if is_remote(base_path):
        return any(
            base_path == root or base_path.startswith(root.rstrip("/") + "/")
            for root in roots
            if is_remote(root)
        )
    path = os.path.realpath(base_path)
    return any(os.path.commonpath([path, root]) == root for root in roots if not is_remote(root))


def canonical_root(root: str) -> str:
    """An --allowed_model_roots entry as :func:`within_roots` compares it."""
    return resolve_base_path(root) if is_remote(root) else os.path.realpath(root)


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "aserve-model-cache")


class Stores:
    """Every store a server reads: the local file system, and one remote store per scheme,
    each downloading into ``<cache_dir>/<scheme>/``."""

    def __init__(self, cache_dir: str = "") -> None:
        self.cache_dir = os.path.abspath(cache_dir or default_cache_dir())
        self._remote: dict[str, RemoteStorage] = {}
        self._lock = threading.Lock()

    def for_path(self, path: str) -> Storage:
        """The store ``path`` (a base path or a version path) lives in."""
        scheme = scheme_of(path)
        if scheme in LOCAL_SCHEMES:
            return LOCAL
        with self._lock:
            store = self._remote.get(scheme)
            if store is None:
                from aserve.remote import RemoteStorage

                store = RemoteStorage(scheme, os.path.join(self.cache_dir, scheme))
                self._remote[scheme] = store
            return store
