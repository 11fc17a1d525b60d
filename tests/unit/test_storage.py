from pathlib import Path

import pytest

from aserve.errors import Code, ServingError
from aserve.remote import RemoteStorage
from aserve.storage import LOCAL, Stores, resolve_base_path, within_roots


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
    assert resolve_base_path(given) == resolved


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_base_path("m") == str(tmp_path / "m")


@pytest.mark.parametrize(
    ("given", "resolved"),
    [("s3://bucket/m/", "s3://bucket/m"), ("S3://bucket//a/./m", "s3://bucket/a/m")],
)
def test_urls_resolve_to_one_spelling(given: str, resolved: str) -> None:
    assert resolve_base_path(given) == resolved


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ftp://host/m", "unsupported store ftp://"),
        ("s3://", "names no bucket"),
    ],
)
def test_unusable_urls_are_refused(given: str, message: str) -> None:
    with pytest.raises(ServingError, match=message):
        resolve_base_path(given)


def test_urls_lie_only_under_url_roots(tmp_path: Path) -> None:
    roots = ("s3://bucket/team", str(tmp_path))
    assert within_roots("s3://bucket/team/m", roots)
    assert within_roots("s3://bucket/team", roots)
    assert not within_roots("s3://bucket/teammate/m", roots)
    assert not within_roots("gs://bucket/team/m", roots)
    assert within_roots(str(tmp_path / "m"), roots)
    assert not within_roots("/elsewhere/m", roots)


def test_stores_route_by_scheme(tmp_path: Path) -> None:
    stores = Stores(str(tmp_path))
    assert stores.for_path("/models/m") is LOCAL
    assert stores.for_path("file:///models/m") is LOCAL
    s3 = stores.for_path("s3://bucket/m")
    assert isinstance(s3, RemoteStorage) and s3.cache_dir == str(tmp_path / "s3")
    assert stores.for_path("s3://other/m/1") is s3


# -- a remote store, over fsspec's (real) local file system ---------------------------------


def _store(tmp_path: Path) -> tuple[RemoteStorage, Path]:
    base = tmp_path / "store" / "m"
    (base / "1" / "variables").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"graph")
    (base / "1" / "variables" / "variables.index").write_bytes(b"index")
    (base / "2").mkdir()
    (base / "notes.txt").write_text("not a version")
    return RemoteStorage("file", str(tmp_path / "cache")), base


def test_remote_listing_reads_version_folders(tmp_path: Path) -> None:
    store, base = _store(tmp_path)
    listing = store.list_versions(f"file://{base}")
    assert listing.versions == {1: f"file://{base}/1", 2: f"file://{base}/2"}
    assert listing.ignored == ("notes.txt",)
    (base / "3").mkdir()  # listed again on every call, never from a cache
    assert 3 in store.list_versions(f"file://{base}").versions
    with pytest.raises(FileNotFoundError):
        store.list_versions(f"file://{base}/missing")


def test_a_version_is_downloaded_whole_and_removed_after_its_last_release(tmp_path: Path) -> None:
    store, base = _store(tmp_path)
    folder = Path(store.local_version(f"file://{base}/1"))
    assert folder == tmp_path / "cache" / str(base).strip("/") / "1"
    assert (folder / "saved_model.pb").read_bytes() == b"graph"
    assert (folder / "variables" / "variables.index").read_bytes() == b"index"
    assert store.local_version(f"file://{base}/1") == str(folder)  # a second model shares it
    store.release_version(f"file://{base}/1")
    assert folder.exists()
    store.release_version(f"file://{base}/1")
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir()] == []  # no staging folder left


def test_a_version_without_files_fails_and_leaves_nothing(tmp_path: Path) -> None:
    store, base = _store(tmp_path)
    with pytest.raises(ServingError) as failed:
        store.local_version(f"file://{base}/2")
    assert failed.value.code is Code.NOT_FOUND
    assert list((tmp_path / "cache" / str(base).strip("/")).iterdir()) == []


def test_leftovers_of_an_earlier_run_are_fetched_again(tmp_path: Path) -> None:
    store, base = _store(tmp_path)
    cached = tmp_path / "cache" / str(base).strip("/")
    (cached / "1").mkdir(parents=True)
    (cached / "1" / "saved_model.pb").write_bytes(b"stale")
    (cached / "1.partial-abc").mkdir()
    folder = Path(store.local_version(f"file://{base}/1"))
    assert (folder / "saved_model.pb").read_bytes() == b"graph"
    assert sorted(p.name for p in cached.iterdir()) == ["1"]


def test_oss_credentials_come_from_alibabas_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aserve.remote import _options

    monkeypatch.setenv("OSS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "secret")
    monkeypatch.delenv("OSS_SESSION_TOKEN", raising=False)
    assert _options("oss") == {"key": "id", "secret": "secret"}
    assert _options("s3") == {}
