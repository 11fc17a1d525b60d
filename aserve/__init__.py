"""aserve: a drop-in, asyncio model server for TensorFlow SavedModels (see README.md).

The per-request modules (:data:`COMPILED`) are compiled with mypyc when aserve is installed
(``setup.py``); the compiled copies (``*.so`` beside the sources) are imported instead of
the sources unless ``ASERVE_PURE_PYTHON=1`` is set, or one of those sources is newer than its
compiled copy (an edited or checked-out file not yet rebuilt): then every one of them is
imported from its source, so aserve never runs stale code. :data:`REQUEST_PATH` says which,
and the server logs it at start-up.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# the modules every predict request runs through (setup.py compiles this list)
COMPILED = (
    "aserve.auth",
    "aserve.batches",
    "aserve.batching",
    "aserve.grpc_api",
    "aserve.grpc_calls",
    "aserve.grpc_native",
    "aserve.http",
    "aserve.http1",
    "aserve.ids",
    "aserve.inference",
    "aserve.metrics",
    "aserve.pool",
    "aserve.records",
    "aserve.registry",
    "aserve.rest",
    "aserve.service",
    "aserve.tensors.budget",
    "aserve.tensors.dtypes",
    "aserve.tensors.json_codec",
    "aserve.tensors.proto",
)
_ROOT = Path(__file__).resolve().parent.parent
_REBUILD = "reinstall, e.g. pip install -e ., to compile it again"


def _source(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _compiled(name: str) -> Path | None:
    source = _source(name)
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return next((p for s in suffixes if (p := source.with_suffix(s)).exists()), None)


def _request_path() -> tuple[str, bool]:
    """(what the request path runs as, whether to import the sources)."""
    if os.environ.get("ASERVE_PURE_PYTHON", "") not in ("", "0"):
        return "pure Python (ASERVE_PURE_PYTHON is set)", True
    built = {name: _compiled(name) for name in COMPILED}
    if not any(built.values()):
        why = "installed with ASERVE_COMPILE=0, or no C compiler or Python headers"
        return f"pure Python (not compiled: {why})", True
    for name, compiled in built.items():
        file = _source(name).relative_to(_ROOT)
        if compiled is None:
            return f"pure Python ({file} has no compiled copy: {_REBUILD})", True
        # a wheel's files are written in some order as it is installed: a source is stale
        # only when it was changed seconds after its compiled copy
        if _source(name).stat().st_mtime > compiled.stat().st_mtime + 2:
            return f"pure Python ({file} is newer than its compiled copy: {_REBUILD})", True
    return "compiled (mypyc)", False


class _Sources(importlib.abc.MetaPathFinder):
    """Imports the compiled modules from their ``.py`` sources."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


REQUEST_PATH, _from_sources = _request_path()
if _from_sources:
    sys.meta_path.insert(0, _Sources())
