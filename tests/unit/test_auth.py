from pathlib import Path

import pytest

from aserve.auth import Authenticator, Tokens
from aserve.errors import Code, ServingError


def tokens(path: Path, text: str) -> Tokens:
    path.write_text(text)
    file = Tokens(str(path))
    assert file.reload_if_changed()
    return file


def test_token_files_skip_blank_lines_and_comments(tmp_path: Path) -> None:
    file = tokens(tmp_path / "t", "# a comment\n  alpha  \n\nbeta\n")
    assert b"alpha" in file and b"beta" in file
    assert b"# a comment" not in file and b"" not in file and b"alph" not in file
    assert not file.reload_if_changed()  # unchanged: not read again


def test_an_unreadable_file_keeps_the_last_tokens(tmp_path: Path) -> None:
    file = tokens(tmp_path / "t", "alpha\n")
    (tmp_path / "t").unlink()
    assert not file.reload_if_changed()
    assert b"alpha" in file


@pytest.mark.parametrize(
    ("access", "header", "outcome"),
    [
        ("open", b"", None),
        ("metrics", b"", None),
        ("predict", b"", Code.UNAUTHENTICATED),
        ("predict", b"Bearer nope", Code.UNAUTHENTICATED),
        ("predict", b"Basic alpha", Code.UNAUTHENTICATED),
        ("predict", b"Bearer alpha", None),
        ("predict", b"bearer   alpha  ", None),
        ("predict", b"Bearer root", None),  # listed in both files
        ("admin", b"Bearer alpha", Code.PERMISSION_DENIED),
        ("admin", b"Bearer root", None),
        ("admin", b"", Code.UNAUTHENTICATED),
    ],
)
def test_access_levels(tmp_path: Path, access: str, header: bytes, outcome: Code | None) -> None:
    auth = Authenticator(
        tokens=tokens(tmp_path / "t", "alpha\nroot\n"), admin=tokens(tmp_path / "a", "root\n")
    )
    if outcome is None:
        auth.check(access, header)
        return
    with pytest.raises(ServingError) as refused:
        auth.check(access, header)
    assert refused.value.code is outcome


def test_without_a_prediction_file_only_management_is_closed(tmp_path: Path) -> None:
    auth = Authenticator(admin=tokens(tmp_path / "a", "root\n"))
    auth.check("predict", b"")
    with pytest.raises(ServingError) as refused:
        auth.check("admin", b"Bearer guess")
    assert refused.value.code is Code.UNAUTHENTICATED
    auth.check("admin", b"Bearer root")


def test_metrics_can_be_protected(tmp_path: Path) -> None:
    auth = Authenticator(tokens=tokens(tmp_path / "t", "alpha\n"), protect_metrics=True)
    with pytest.raises(ServingError):
        auth.check("metrics", b"")
    auth.check("metrics", b"Bearer alpha")
