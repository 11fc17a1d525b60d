from pathlib import Path

import pytest

from aserve.errors import ServingError
from aserve.storage import LOCAL, storage_for


def test_local_listing_reads_only_directories(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").write_text("a file named like a version")
    (tmp_path / "assets").mkdir()
    listing = LOCAL.list_versions(str(tmp_path))
    assert listing.versions == {1: str(tmp_path / "1")}
    assert listing.ignored == ("2", "assets")
    with pytest.raises(OSError):
        LOCAL.list_versions(str(tmp_path / "missing"))


def test_local_versions_are_their_own_folders(tmp_path: Path) -> None:
    assert LOCAL.local_version(str(tmp_path / "1")) == str(tmp_path / "1")


def test_read_text_of_a_missing_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    assert LOCAL.read_text(str(tmp_path / "a.txt")) == "hello"
    assert LOCAL.read_text(str(tmp_path / "b.txt")) is None


@pytest.mark.parametrize(
    ("given", "resolved"),
    [("/models/m", "/models/m"), ("file:///models/m", "/models/m"), ("/a/../b", "/b")],
)
def test_local_paths_resolve_to_absolute_folders(given: str, resolved: str) -> None:
    assert storage_for(given).resolve(given) == resolved


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage_for("m").resolve("m") == str(tmp_path / "m")


def test_remote_stores_are_refused_for_now() -> None:
    with pytest.raises(ServingError, match="local folders only"):
        storage_for("s3://bucket/m").resolve("s3://bucket/m")
