"""Build hook: generate aserve/_proto/*_pb2.py (and .pyi) from protos/ with grpcio-tools.

All project metadata lives in pyproject.toml; this file only adds the code
generation step to build_py (used by wheels and by editable installs alike).
"""

from __future__ import annotations

import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()


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


setup(cmdclass={"build_py": BuildWithProtos})
