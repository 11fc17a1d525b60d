"""Models in object storage (S3, GCS, OSS and the like), through fsspec's back ends.

A :class:`RemoteStorage` is the :class:`~aserve.storage.Storage` of one URL scheme. It lists
version folders remotely on every poll (listing caches dropped first) and downloads a version
before it loads:

    <cache>/<bucket>/<prefix>/<version>.partial-XXXX/   every file of the version, then
    <cache>/<bucket>/<prefix>/<version>/                renamed into place

so a folder named like a version is always complete; a failed download removes what it
fetched and fails the load (which the manager retries). Two models with the same base path
share one download; the copy is removed when the last of them has unloaded it.

Credentials and endpoints come from each back end's own configuration (for S3, botocore's:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``,
``~/.aws/config``...; for OSS, Alibaba Cloud's ``OSS_ENDPOINT``, ``OSS_ACCESS_KEY_ID``,
``OSS_ACCESS_KEY_SECRET``, ``OSS_SESSION_TOKEN``). Everything here blocks; it runs in the
server's I/O and load threads.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aserve.errors import Code, ServingError
from aserve.storage import StoreUnreachable
from aserve.versions import Listing, parse_listing

log = logging.getLogger("aserve.storage")


@dataclass
class _Copy:
    """One downloaded version and the loaded versions using it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    holders: int = 0


class RemoteStorage:
    """The versions under ``<scheme>://`` base paths, cached in ``cache_dir``."""

    def __init__(self, scheme: str, cache_dir: str) -> None:
        self.scheme = scheme
        self.cache_dir = cache_dir
        self._fs: Any = None
        self._lock = threading.Lock()
        self._copies: dict[str, _Copy] = {}

    def resolve(self, base_path: str) -> str:
        from aserve.storage import resolve_base_path

        return resolve_base_path(base_path)

    def list_versions(self, base_path: str) -> Listing:
        fs = self._filesystem()
        try:
            fs.invalidate_cache(base_path)
            entries = fs.ls(base_path, detail=True)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise StoreUnreachable(f"{type(e).__name__}: {e}") from None
        dirs: list[str] = []
        files: list[str] = []
        for entry in entries:
            name = posixpath.basename(entry["name"].rstrip("/"))
            (dirs if entry.get("type") == "directory" else files).append(name)
        return parse_listing(base_path, dirs, files)

    def local_version(self, version_path: str) -> str:
        target = self._cache_path(version_path)
        copy = self._copy(target)
        with copy.lock:
            if copy.holders == 0:
                self._download(version_path, target)
            copy.holders += 1
        return target

    def release_version(self, version_path: str) -> None:
        target = self._cache_path(version_path)
        copy = self._copy(target)
        with copy.lock:
            copy.holders = max(copy.holders - 1, 0)
            if copy.holders == 0:
                shutil.rmtree(target, ignore_errors=True)
                log.info("removed the cached copy %s of %s", target, version_path)

    def read_text(self, path: str) -> str | None:
        try:
            data: bytes = self._filesystem().cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as e:
            raise StoreUnreachable(f"{type(e).__name__}: {e}") from None
        return data.decode("utf-8")

    # -- internals --------------------------------------------------------------------------

    def _filesystem(self) -> Any:
        with self._lock:
            if self._fs is None:
                import fsspec

                self._fs = fsspec.filesystem(self.scheme, **_options(self.scheme))
            return self._fs

    def _cache_path(self, version_path: str) -> str:
        rest = version_path.partition("://")[2].strip("/")
        parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
        return os.path.join(self.cache_dir, *parts)

    def _copy(self, target: str) -> _Copy:
        with self._lock:
            return self._copies.setdefault(target, _Copy())

    def _download(self, version_path: str, target: str) -> None:
        """Every file under ``version_path`` into a staging folder, renamed to ``target``."""
        start = time.perf_counter()
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        _remove_leftovers(target)
        staging = tempfile.mkdtemp(prefix=f"{os.path.basename(target)}.partial-", dir=parent)
        try:
            count, size = self._fetch_into(version_path, staging)
            os.rename(staging, target)
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, ServingError | KeyboardInterrupt | SystemExit):
                raise
            raise ServingError(
                Code.UNAVAILABLE, f"Could not download {version_path}: {type(e).__name__}: {e}"
            ) from None
        log.info(
            "downloaded %s (%d files, %.1f MB) to %s in %.1f s",
            version_path,
            count,
            size / 1e6,
            target,
            time.perf_counter() - start,
        )

    def _fetch_into(self, version_path: str, staging: str) -> tuple[int, int]:
        fs = self._filesystem()
        fs.invalidate_cache(version_path)
        root = fs._strip_protocol(version_path).rstrip("/")
        remote, local, size = [], [], 0
        for name, info in sorted(fs.find(version_path, detail=True).items()):
            relative = posixpath.relpath(name, root).split("/")
            if info.get("type") != "file" or ".." in relative or "." in relative:
                continue  # folder markers, and keys that would leave the staging folder
            destination = os.path.join(staging, *relative)
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            remote.append(name)
            local.append(destination)
            size += int(info.get("size") or 0)
        if not remote:
            raise ServingError(Code.NOT_FOUND, f"No files found under {version_path}")
        fs.get(remote, local)
        return len(remote), size


def _options(scheme: str) -> dict[str, str]:
    """Back-end options aserve reads from the environment itself: ossfs takes only
    ``OSS_ENDPOINT`` from there, so Alibaba Cloud's standard credential variables
    (``OSS_ACCESS_KEY_ID``, ``OSS_ACCESS_KEY_SECRET``, ``OSS_SESSION_TOKEN``) are passed to it.
    s3fs and gcsfs read their credentials (and botocore ``AWS_ENDPOINT_URL``) themselves."""
    if scheme != "oss":
        return {}
    names = {"key": "OSS_ACCESS_KEY_ID", "secret": "OSS_ACCESS_KEY_SECRET"}
    names["token"] = "OSS_SESSION_TOKEN"
    return {option: os.environ[name] for option, name in names.items() if os.environ.get(name)}


def _remove_leftovers(target: str) -> None:
    """A copy left by an earlier run (complete or not) is fetched again, not trusted."""
    shutil.rmtree(target, ignore_errors=True)
    parent, name = os.path.split(target)
    with os.scandir(parent) as entries:
        for entry in entries:
            if entry.name.startswith(f"{name}.partial-"):
                shutil.rmtree(entry.path, ignore_errors=True)
