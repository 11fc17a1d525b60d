"""Custom ops: TF-Text's (registered when tensorflow-text is installed, as TF Serving links
them in) and op libraries named by ``--custom_op_paths``. The server is a fresh process, so
only aserve registers them.

The op library used is one TensorFlow ships (``_audio_microfrontend_op.so``); TensorFlow's
core registers its op too, so its test shows a real library loading and its model serving,
not an op that only the library provides (TF-Text's test shows that).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models import audio_frontend_library, build_audio_frontend, build_whitespace_tokenizer
from support import AserveProcess, run_server


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("custom_ops")
    build_audio_frontend(root / "audio" / "1")
    if _has_tf_text():
        build_whitespace_tokenizer(root / "tokenizer" / "1")
    yield root


def _has_tf_text() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow_text") is not None


def _config(root: Path, names: list[str]) -> Path:
    entries = "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in names
    )
    path = root / f"{'_'.join(names)}.config"
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def _predict(server: AserveProcess, name: str, instances: list[object]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": instances})


def test_an_op_library_registers_its_ops_before_models_load(models: Path) -> None:
    library = audio_frontend_library()
    args = (f"--model_config_file={_config(models, ['audio'])}", f"--custom_op_paths={library}")
    with AserveProcess(*args) as server:
        server.wait_for_log("aserve ready")
        assert "custom ops registered: " in server.log and str(library) in server.log
        response = _predict(server, "audio", [0] * 1600)  # 100 ms of silence
        assert response.status_code == 200, response.text
        features = response.json()["predictions"]
        assert len(features) == 4 and all(len(frame) == 8 for frame in features)


@pytest.mark.skipif(not _has_tf_text(), reason="tensorflow-text is not installed")
def test_tf_text_ops_load_when_tensorflow_text_is_installed(models: Path) -> None:
    with AserveProcess(f"--model_config_file={_config(models, ['tokenizer'])}") as server:
        server.wait_for_log("aserve ready")
        assert "custom ops registered: tensorflow_text" in server.log
        response = _predict(server, "tokenizer", ["hello big world", "hi"])
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [["hello", "big", "world"], ["hi", "", ""]]}


def test_a_file_that_is_no_op_library_stops_start_up(models: Path) -> None:
    not_a_library = models / "not_a_library.so"
    not_a_library.write_text("not an ELF file")
    args = (f"--model_base_path={models / 'audio'}", f"--custom_op_paths={not_a_library}")
    failed = pytest.raises(RuntimeError, match=f"cannot load the op library {not_a_library}")
    with failed, run_server(*args):
        pass
