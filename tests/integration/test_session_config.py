"""``--tensorflow_session_config_file``: one text ConfigProto for every session, as TF Serving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aserve import flags
from aserve.server import Server, StartupError
from support import HALF_PLUS_TWO, copy_version, run_server


def test_the_config_proto_reaches_every_session(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    """The gate model waits for a file that never comes; only the session's own
    operation_timeout_in_ms (no request timeout is set) can end the run."""
    copy_version(built_models["gate"] / "1", tmp_path / "gate", 1)
    config = tmp_path / "session.config"
    config.write_text("operation_timeout_in_ms: 300\n")
    with run_server(
        "--model_name=gate",
        f"--model_base_path={tmp_path / 'gate'}",
        f"--tensorflow_session_config_file={config}",
        "--rest_api_timeout_in_ms=0",
    ) as server:
        server.wait_for_versions("gate", {1})
        started = time.monotonic()
        answer = server.post("/v1/models/gate:predict", {"instances": [str(tmp_path / "never")]})
        assert answer.status_code == 504, answer.text  # DEADLINE_EXCEEDED
        assert time.monotonic() - started < 30


def test_a_broken_session_config_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "session.config"
    config.write_text("operation_timeout: 300\n")
    server = Server(
        flags.parse(
            [f"--model_base_path={HALF_PLUS_TWO}", f"--tensorflow_session_config_file={config}"]
        )
    )
    with pytest.raises(StartupError) as failed:
        asyncio.run(server.serve())
    assert str(failed.value).startswith("Error parsing text-format tensorflow.ConfigProto: 1:")
