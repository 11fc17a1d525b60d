import os
import shutil
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build every test model and data file (models.build_testdata) once, before any test runs.

    Tests reach them only through ``support.TESTDATA``, so a session whose tests never import
    ``support`` (most unit tests) skips the build and its TensorFlow import.
    """
    support = sys.modules.get("support")
    if support is not None and session.items and not session.config.option.collectonly:
        from models import build_testdata

        build_testdata(support.TESTDATA)


def pytest_sessionfinish() -> None:
    support = sys.modules.get("support")
    if support is not None:
        shutil.rmtree(support.TESTDATA, ignore_errors=True)
