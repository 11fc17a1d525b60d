"""A base path that holds one SavedModel directly (no numbered version folder), as KServe's
/mnt/models often does: served as version 1 with one warning, until a version folder appears.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from support import HALF_PLUS_THREE, HALF_PLUS_TWO, copy_version, run_server


def test_savedmodel_at_the_top_of_the_base_path_is_served_as_version_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "models"
    shutil.copytree(HALF_PLUS_TWO / "00000123", base)
    caplog.set_level(logging.WARNING, logger="aserve.source")
    with run_server("--model_name=m", f"--model_base_path={base}") as server:
        server.wait_for_versions("m", {1})
        assert server.get("/v2/health/ready").status_code == 200
        answer = server.post("/v1/models/m:predict", {"instances": [2.0]})
        assert answer.json() == {"predictions": [3.0]}
        time.sleep(1.5)  # the flat layout is polled again (every second): still one warning
        warnings = [r.getMessage() for r in caplog.records if "holds a SavedModel" in r.message]
        assert warnings == [
            f"model m: base path {base} holds a SavedModel itself, not in a version folder; "
            f"serving it as version 1. Move it into {base}/1/ (and later versions into 2/, "
            "3/, ...) to silence this"
        ]

        copy_version(HALF_PLUS_THREE / "00000123", base, 2)  # the fix: a numbered folder
        server.wait_for_versions("m", {2})
        answer = server.post("/v1/models/m:predict", {"instances": [2.0]})
        assert answer.json() == {"predictions": [4.0]}
