"""Build hooks: generate aserve/_proto/*_pb2.py (and .pyi) from protos/ with grpcio-tools,
and compile the request path's modules with mypyc.

All project metadata lives in pyproject.toml; this file only adds the code generation step
to build_py and the compiled modules (used by wheels and by editable installs alike).

The modules in ``aserve.COMPILED`` are the per-request path (see README, "Compiled request
path"): compiled, they take about half the event loop's CPU per request. They stay plain,
typed Python; the compiled copies sit beside them (``*.so``) and are preferred on import,
unless ``ASERVE_PURE_PYTHON=1`` is set or a source file is newer than its compiled copy (see
``aserve/__init__.py``). ``ASERVE_COMPILE=0`` at install time builds no compiled copy (and
removes stale ones from an editable checkout); so does a machine with no C compiler or no
Python headers, with a warning.
"""

from __future__ import annotations

import ast
import os
import pathlib
import shutil
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()


def compiled_sources() -> list[str]:
    """The modules every predict request runs through: aserve.COMPILED, as files (read from
    aserve/__init__.py's source, so the list lives in one place and the build imports
    nothing of aserve's)."""
    tree = ast.parse((ROOT / "aserve" / "__init__.py").read_text())
    names = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
    )
    return [name.replace(".", "/") + ".py" for name in names]


def generate_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted((ROOT / "protos").rglob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT / 'protos'}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",  # type stubs, so mypy sees the generated messages
    ]
    if protoc.main(args + [str(s) for s in sources]) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(map(str, sources)))


class BuildWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


def compiled_modules() -> list[Any]:
    """The mypyc extensions, or none (ASERVE_COMPILE=0, or no mypyc or C compiler)."""
    if os.environ.get("ASERVE_COMPILE", "1") == "0":
        for pattern in ("aserve/**/*.so", "*__mypyc.*.so"):  # left by an editable install
            for stale in ROOT.glob(pattern):
                stale.unlink()
        return []
    if shutil.which(os.environ.get("CC", "cc")) is None:
        print("aserve: no C compiler found: installing the pure-Python request path (slower)")
        return []
    from mypyc.build import mypycify

    generate_protos()  # the compiled modules are type-checked against the generated stubs
    # the build's own environment has none of aserve's dependencies, so mypy sees them as Any:
    # strict mode's complaints about Any (checked by `mypy -p aserve` against the installed
    # packages) are turned off here
    relaxed = ["--no-warn-return-any", "--allow-subclassing-any", "--no-warn-unused-ignores"]
    extensions = list(mypycify([*relaxed, *compiled_sources()], opt_level="3"))
    for extension in extensions:  # one that cannot be built (no Python.h, say) is skipped
        extension.optional = True
    return extensions


setup(cmdclass={"build_py": BuildWithProtos}, ext_modules=compiled_modules())
