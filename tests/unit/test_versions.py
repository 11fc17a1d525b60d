import pytest

from aserve.versions import (
    AllVersions,
    Latest,
    Specific,
    aspired_versions,
    missing_specific_versions,
    parse_listing,
    version_of,
)


@pytest.mark.parametrize(
    ("entry", "version"),
    [
        ("1", 1),
        ("00000123", 123),
        ("0", 0),
        ("abc", None),
        ("1a", None),
        ("-1", None),
        ("", None),
        (".staging-1", None),
        ("1.0", None),
    ],
)
def test_version_of(entry: str, version: int | None) -> None:
    assert version_of(entry) == version


def test_parse_listing_ignores_non_versions_and_keeps_first_spelling() -> None:
    listing = parse_listing("/m", ["001", "1", "2", "tmp"], ["README"])
    assert listing.versions == {1: "/m/001", 2: "/m/2"}
    assert listing.ignored == ("README", "tmp")


FOUND = {1: "/m/1", 3: "/m/3", 7: "/m/7"}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Latest(), [7]),
        (Latest(0), [7]),
        (Latest(2), [3, 7]),
        (Latest(10), [1, 3, 7]),
        (AllVersions(), [1, 3, 7]),
        (Specific(frozenset({3, 9})), [3]),
        (Specific(frozenset()), []),
    ],
)
def test_aspired_versions(policy: Latest | AllVersions | Specific, expected: list[int]) -> None:
    assert aspired_versions(policy, FOUND) == {v: FOUND[v] for v in expected}


def test_missing_specific_versions() -> None:
    assert missing_specific_versions(Specific(frozenset({3, 9, 8})), FOUND) == [8, 9]
    assert missing_specific_versions(Latest(), FOUND) == []


@pytest.mark.parametrize("marker", ["saved_model.pb", "saved_model.pbtxt"])
def test_a_base_path_holding_a_savedmodel_itself_is_version_1(marker: str) -> None:
    listing = parse_listing("/mnt/models", ["variables", "assets"], [marker, "fingerprint.pb"])
    assert listing.versions == {1: "/mnt/models"}
    assert listing.unversioned
    assert listing.ignored == ()


def test_version_folders_win_over_a_savedmodel_at_the_top() -> None:
    listing = parse_listing("/m", ["2", "variables"], ["saved_model.pb"])
    assert listing.versions == {2: "/m/2"}
    assert not listing.unversioned


def test_a_base_path_without_versions_or_savedmodel_is_empty() -> None:
    listing = parse_listing("/m", ["variables"], ["model.keras"])
    assert listing.versions == {} and not listing.unversioned
