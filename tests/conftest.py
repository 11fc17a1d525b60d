import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_sessionstart() -> None:
    """Build every test model and data file once, before any test runs."""
    from models import build_testdata
    from support import TESTDATA

    build_testdata(TESTDATA)


def pytest_sessionfinish() -> None:
    from support import TESTDATA

    shutil.rmtree(TESTDATA, ignore_errors=True)
