"""Versions discovered, swapped and retired while the server runs; configs and labels reloaded.

Version 1 of the test model is half_plus_two (2.0 -> 3.0) and version 2 is
half_plus_three (2.0 -> 4.0), so every answer says which version served it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from support import (
    BAD_MODEL,
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    RunningServer,
    copy_version,
    remove_version,
    run_server,
    wait_until,
)

V1, V2 = HALF_PLUS_TWO / "00000123", HALF_PLUS_THREE / "00000123"
ANSWER = {3.0: 1, 4.0: 2, 5.0: 3}  # predict(2.0) -> version


def served_version(server: RunningServer, model: str = "m", suffix: str = "") -> int:
    response = server.post(f"/v1/models/{model}{suffix}:predict", {"instances": [2.0]})
    assert response.status_code == 200, response.text
    return ANSWER[response.json()["predictions"][0]]


def version_or_none(server: RunningServer, suffix: str = "") -> int | None:
    response = server.post(f"/v1/models/m{suffix}:predict", {"instances": [2.0]})
    return ANSWER[response.json()["predictions"][0]] if response.status_code == 200 else None


def write_config(
    path: Path, base: Path, policy: str = "", labels: dict[str, int] | None = None
) -> None:
    label_text = "".join(
        f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items()
    )
    path.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
        f"{policy}{label_text} }} }}\n"
    )


def test_new_version_is_discovered_and_removed_version_falls_back(tmp_path: Path) -> None:
    copy_version(V1, tmp_path, 1)
    (tmp_path / "notes").mkdir()  # ignored: not a version number
    with run_server("--model_name=m", f"--model_base_path={tmp_path}") as server:
        server.wait_for_versions("m", {1})
        assert served_version(server) == 1
        copy_version(V2, tmp_path, 2)
        server.wait_for_versions("m", {2})
        assert served_version(server) == 2
        assert server.status("m") == {2: "AVAILABLE", 1: "END"}
        remove_version(tmp_path, 2)
        server.wait_for_versions("m", {1})
        assert served_version(server) == 1


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("model_version_policy { latest { num_versions: 2 } }", {2, 3}),
        ("model_version_policy { all {} }", {1, 2, 3}),
        ("model_version_policy { specific { versions: 1 versions: 3 } }", {1, 3}),
        ("", {3}),
    ],
)
def test_version_policies(tmp_path: Path, policy: str, expected: set[int]) -> None:
    base = tmp_path / "m"
    base.mkdir()
    for v in (1, 2, 3):
        copy_version(V1, base, v)
    config = tmp_path / "models.config"
    write_config(config, base, policy)
    with run_server(f"--model_config_file={config}") as server:
        server.wait_for_versions("m", expected)
        for v in expected:
            assert (
                server.post(f"/v1/models/m/versions/{v}:predict", {"instances": [2.0]}).status_code
                == 200
            )


def test_labels_route_and_move_when_the_config_file_changes(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    copy_version(V1, base, 1)
    copy_version(V2, base, 2)
    both = "model_version_policy { specific { versions: 1 versions: 2 } }"
    config = tmp_path / "models.config"
    write_config(config, base, both, {"stable": 1, "canary": 2})
    with run_server(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"
    ) as server:
        server.wait_for_versions("m", {1, 2})
        assert served_version(server, suffix="/labels/stable") == 1
        assert served_version(server, suffix="/labels/canary") == 2
        write_config(config, base, both, {"stable": 2, "canary": 2})
        wait_until(lambda: version_or_none(server, "/labels/stable") == 2, 30, "label to move")
        # a label may not name a version that is not AVAILABLE: the new config is rejected...
        write_config(config, base, both, {"stable": 2, "canary": 2, "next": 3})
        time.sleep(2.5)
        response = server.post("/v1/models/m/labels/next:predict", {"instances": [2.0]})
        assert response.status_code == 400
        assert response.json() == {"error": "Unrecognized servable version label: next"}
        # ...and the running config keeps serving
        assert served_version(server, suffix="/labels/stable") == 2


def test_flag_allows_new_labels_for_unavailable_versions(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    copy_version(V1, base, 1)
    config = tmp_path / "models.config"
    write_config(config, base, "", {"stable": 1})
    args = (
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models",
    )
    with run_server(*args) as server:
        server.wait_for_versions("m", {1})
        write_config(config, base, "", {"stable": 1, "canary": 2})
        wait_until(
            lambda: (
                server.post("/v1/models/m/labels/canary:predict", {"instances": [2.0]}).status_code
                == 404
            ),
            30,
            "the new label to be accepted",
        )
        assert server.post("/v1/models/m/labels/canary:predict", {"instances": [2.0]}).json() == {
            "error": "Servable not found for request: Specific(m, 2)"
        }
        copy_version(V2, base, 2)
        wait_until(lambda: version_or_none(server, "/labels/canary") == 2, 30, "canary to serve")
        # moving an existing label to a version that is not AVAILABLE is still refused
        write_config(config, base, "", {"stable": 3, "canary": 2})
        time.sleep(2.5)
        assert (
            server.post("/v1/models/m/labels/stable:predict", {"instances": [2.0]}).status_code
            == 404
        )
        assert server.post("/v1/models/m/labels/stable:predict", {"instances": [2.0]}).json()[
            "error"
        ] == ("Servable not found for request: Specific(m, 1)")


def test_startup_labels_apply_once_their_versions_are_available(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    copy_version(V1, base, 1)
    copy_version(V2, base, 2)
    config = tmp_path / "models.config"
    write_config(config, base, "model_version_policy { all {} }", {"stable": 1, "canary": 2})
    with run_server(f"--model_config_file={config}") as server:  # TF Serving refuses to start here
        server.wait_for_versions("m", {1, 2})
        assert served_version(server, suffix="/labels/stable") == 1
        assert served_version(server, suffix="/labels/canary") == 2


@pytest.mark.parametrize("batching", [(), ("--enable_batching",)], ids=["direct", "batching"])
def test_zero_failed_requests_while_versions_swap(
    tmp_path: Path, batching: tuple[str, ...]
) -> None:
    copy_version(V1, tmp_path, 1)
    with run_server("--model_name=m", f"--model_base_path={tmp_path}", *batching) as server:
        server.wait_for_versions("m", {1})
        stop, results = threading.Event(), Counter[str]()

        def client() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/v1/models/m:predict", content='{"instances": [2.0]}')
                    if response.status_code == 200:
                        results[str(response.json()["predictions"][0])] += 1
                    else:
                        results[f"HTTP {response.status_code}: {response.text}"] += 1

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            for new in range(2, 6):  # versions 2..5 alternate between the two graphs
                copy_version(V2 if new % 2 == 0 else V1, tmp_path, new)
                server.wait_for_versions("m", {new})
                remove_version(tmp_path, new - 1)
                time.sleep(0.3)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        assert set(results) == {"3.0", "4.0"}, results  # only successes, from both graphs
        assert sum(results.values()) > 50


def test_version_in_use_is_not_unloaded_until_its_request_finishes(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate_model = built_models["gate"] / "1"
    copy_version(gate_model, tmp_path, 1)
    gate = tmp_path / "gate.txt"
    with run_server("--model_name=gate", f"--model_base_path={tmp_path}") as server:
        server.wait_for_versions("gate", {1})
        answer: dict[str, httpx.Response] = {}
        request = threading.Thread(
            target=lambda: answer.update(
                r=server.post("/v1/models/gate:predict", {"inputs": {"path": [str(gate)]}})
            )
        )
        request.start()
        wait_until(
            lambda: (
                server.server.core.registry.available("gate") == [1]
                and server.server.core.registry._models["gate"].versions[1].refs == 1
            ),
            30,
            "request in flight",
        )
        copy_version(gate_model, tmp_path, 2)
        server.wait_for_state("gate", 2, "AVAILABLE")
        server.wait_for_state("gate", 1, "UNLOADING")
        time.sleep(1.0)
        assert server.status("gate")[1] == "UNLOADING"  # still held by the request
        staged = tmp_path / "gate.tmp"
        staged.write_text("released")
        staged.rename(gate)
        request.join(30)
        assert answer["r"].status_code == 200 and answer["r"].json() == {"outputs": ["released"]}
        server.wait_for_state("gate", 1, "END")


def test_broken_version_is_reported_and_previous_version_keeps_serving(tmp_path: Path) -> None:
    copy_version(V1, tmp_path, 1)
    with run_server("--model_name=m", f"--model_base_path={tmp_path}") as server:
        server.wait_for_versions("m", {1})
        copy_version(BAD_MODEL / "00000123", tmp_path, 2)
        server.wait_for_state("m", 2, "END")
        status = server.get("/v1/models/m/versions/2").json()["model_version_status"][0]
        assert status["status"]["error_code"] == "UNIMPLEMENTED"
        assert status["status"]["error_message"] == "Session Bundle is deprecated and removed."
        assert served_version(server) == 1
        assert server.status("m") == {2: "END", 1: "AVAILABLE"}


def test_corrupt_config_is_rejected_and_the_running_config_keeps_serving(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    copy_version(V1, base, 1)
    config = tmp_path / "models.config"
    write_config(config, base)
    with run_server(
        f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"
    ) as server:
        server.wait_for_versions("m", {1})
        config.write_text("improperly formatted file")
        time.sleep(2.5)
        assert served_version(server) == 1
        config.write_text(
            'model_config_list { config { name: "m" base_path: "/x" model_platform: "pytorch" } }'
        )
        time.sleep(2.5)
        assert served_version(server) == 1
        other = tmp_path / "n"
        other.mkdir()
        copy_version(V2, other, 5)
        config.write_text(
            f'model_config_list {{ config {{ name: "n" base_path: "{other}" model_platform: "tensorflow" }} }}'
        )
        server.wait_for_versions("n", {5})
        server.wait_for_state("m", 1, "END")  # removed from the config: unloaded
        assert json.loads(server.post("/v1/models/m:predict", {"instances": [2.0]}).text)[
            "error"
        ] == ("Servable not found for request: Latest(m)")
