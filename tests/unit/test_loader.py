"""The SavedModel loader on real models: TF1 and TF2 exports, errors, where runs execute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aserve import loader
from aserve.errors import Code, ServingError
from aserve.loader import LoadOptions, load
from models import build_gate
from support import BAD_MODEL, COUNTER, HALF_PLUS_THREE, HALF_PLUS_TWO, TF2_HALF_PLUS_TWO


@pytest.mark.parametrize(
    ("path", "feeds", "fetch", "expected"),
    [
        (HALF_PLUS_TWO / "00000123", {"x:0": [[2.0], [3.0]]}, "y:0", [[3.0], [3.5]]),
        (HALF_PLUS_THREE / "00000123", {"x:0": [1.0, 2.0, 5.0]}, "y:0", [3.5, 4.0, 5.5]),
        (
            TF2_HALF_PLUS_TWO / "00000123",
            {"serving_default_x:0": [2.0, 3.0, 4.0]},
            "StatefulPartitionedCall_5:0",
            [3.0, 3.5, 4.0],
        ),
    ],
)
def test_runs_any_shape_the_graph_accepts(
    path: Path, feeds: dict[str, list], fetch: str, expected: list
) -> None:
    model = load(str(path), LoadOptions(intra_op_threads=1))
    try:
        arrays = {name: np.array(value, np.float32) for name, value in feeds.items()}
        assert model.run(arrays, [fetch])[0].tolist() == expected
    finally:
        model.close()


def test_reference_typed_outputs_keep_their_state() -> None:
    model = load(str(COUNTER / "00000123"), LoadOptions())
    try:
        model.run({}, ["reset_counter_op/Assign:0"])
        model.run({}, ["incr_counter_op/AssignAdd:0"])
        assert float(model.run({}, ["counter:0"])[0]) == 1.0
    finally:
        model.close()


def test_graphs_that_loop_keep_tensorflows_pool_so_timeouts_stop_them(tmp_path: Path) -> None:
    simple = load(str(HALF_PLUS_TWO / "00000123"), LoadOptions())
    looping = load(str(build_gate(tmp_path / "gate" / "1")), LoadOptions())
    try:
        assert simple.runs_in_caller_thread and not looping.runs_in_caller_thread
        with pytest.raises(ServingError) as info:
            looping.run(
                {"path:0": np.array([str(tmp_path / "never")], object)},
                ["content:0"],
                timeout_ms=200,
            )
        assert info.value.code is Code.DEADLINE_EXCEEDED
    finally:
        simple.close()
        looping.close()


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        (BAD_MODEL / "00000123", Code.UNIMPLEMENTED, "Session Bundle is deprecated and removed."),
        (
            HALF_PLUS_TWO,
            Code.NOT_FOUND,
            "Specified file path does not appear to contain a SavedModel bundle",
        ),
    ],
)
def test_load_errors(path: Path, code: Code, message: str) -> None:
    with pytest.raises(ServingError) as info:
        load(str(path), LoadOptions())
    assert info.value.code is code and info.value.message.startswith(message)


def test_unknown_tags() -> None:
    with pytest.raises(ServingError) as info:
        load(str(HALF_PLUS_TWO / "00000123"), LoadOptions(tags=("gpu",)))
    assert info.value.code is Code.NOT_FOUND
    assert "Could not find meta graph def matching supplied tags: { gpu }" in info.value.message


def test_an_unreadable_version_folder_is_reported_as_permission_denied(tmp_path: Path) -> None:
    import os

    version = tmp_path / "1"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"")
    version.chmod(0o000)
    tmp_path.chmod(0o755)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # as an unprivileged user: root may read any folder
        try:
            if os.geteuid() == 0:
                os.setuid(65534)
            try:
                loader._check_layout(str(version))
                answer = "no error"
            except ServingError as e:
                answer = f"{e.code.name} {e.message}"
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    answer = os.read(read, 4096).decode()
    version.chmod(0o755)
    assert (
        answer
        == f"PERMISSION_DENIED Permission denied: the server cannot read the version folder {version}"
    )
