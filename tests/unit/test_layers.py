"""The layering of the README's Development section, checked by import-linter.

The contracts live in pyproject.toml (``[tool.importlinter]``): the pure core imports no
asyncio and no TensorFlow, the lifecycle knows no protocol, the service knows no transport,
front ends reach the lifecycle only through the service, and only the front-end
modules know the transports under them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*config: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", *config],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's aserve
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_are_kept() -> None:
    done = lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


def test_a_broken_contract_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "aserve"\ninclude_external_packages = true\n'
        '[[tool.importlinter.contracts]]\nname = "the service imports no asyncio"\n'
        'type = "forbidden"\nsource_modules = ["aserve.service"]\n'
        'forbidden_modules = ["asyncio"]\n'
    )
    done = lint_imports(str(config))
    assert done.returncode == 1
    assert "aserve.service is not allowed to import asyncio" in done.stdout
