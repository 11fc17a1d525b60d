"""Peer servers for the benchmark: Seldon MLServer and NVIDIA Triton serving half_plus_two.

Each peer lives in its own virtual environment outside the repo (see loadtests/PEERS.md) and is
found through an environment variable, so a machine without it simply skips it:

    ASERVE_MLSERVER  default /work/peers/mlserver/bin/mlserver
    ASERVE_TRITON    default /work/peers/triton/lib/python3.*/site-packages/pytriton/
                             tritonserver/bin/tritonserver   (shipped by nvidia-pytriton)

This module imports nothing from the peers: request bodies are built here (the gRPC one with a
tiny protobuf encoder), and only the standard library is used (plus grpcio, one of aserve's own
dependencies, to check one gRPC answer while starting a peer, if it is importable).

    with running("triton", rest_port=8500, grpc_port=8501) as peer:
        ...  # POST peer.rest_body to peer.rest_url; h2load peer.grpc_method on peer.grpc_target
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MODEL = "half_plus_two"
# "mlserver" is MLServer as it ships (the model in one worker process, parallel_workers 1);
# "mlserver-inline" runs the model on the server's own event loop (parallel_workers 0), which
# was ~1.5x faster here for this tiny model.
PEERS = ("mlserver", "mlserver-inline", "triton")
_MLSERVER_WORKERS = {"mlserver": 1, "mlserver-inline": 0}
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_HERE = Path(__file__).resolve().parent / "peers"
_X, _EXPECTED = 1.0, 2.5
_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PeerEndpoint:
    name: str  # "MLServer 1.7.1", "Triton 2.51.0" (version as the server reports it)
    rest_url: str  # POST rest_body here
    rest_body: bytes  # V2 inference protocol JSON, one example (x = 1.0)
    grpc_target: str | None  # host:port
    grpc_method: str | None  # full method path, for h2load
    grpc_body: bytes | None  # serialized ModelInferRequest, one example, without gRPC framing
    expected: float  # 2.5


class PeerUnavailable(RuntimeError):
    """The peer is not installed here (or cannot be started)."""


# ---- request bodies and answers ---------------------------------------------------------------

REST_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [_X]}]}
).encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings, messages, packed repeated scalars."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def infer_request(model: str, x: float) -> bytes:
    """inference.ModelInferRequest {model_name, inputs: [{x, FP32, [1, 1], fp32_contents}]}."""
    contents = _field(6, struct.pack("<f", x))  # InferTensorContents.fp32_contents (packed)
    tensor = (
        _field(1, b"x")  # name
        + _field(2, b"FP32")  # datatype
        + _field(3, _varint(1) + _varint(1))  # shape (packed int64)
        + _field(5, contents)  # contents
    )
    return _field(1, model.encode()) + _field(5, tensor)  # model_name, inputs


GRPC_BODY = infer_request(MODEL, _X)


def _fields(buf: bytes) -> dict[int, list[bytes]]:
    """Length-delimited fields of a protobuf message, by number (other wire types skipped)."""
    out: dict[int, list[bytes]] = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = _read_varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            out.setdefault(key >> 3, []).append(buf[i : i + n])
            i += n
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = buf[i]
        n |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return n, i


def grpc_value(response: bytes) -> float:
    """The first FP32 output of a serialized inference.ModelInferResponse."""
    fields = _fields(response)
    if 6 in fields:  # raw_output_contents (Triton answers this way)
        return float(struct.unpack_from("<f", fields[6][0])[0])
    tensor = _fields(fields[5][0])  # outputs[0] (MLServer: InferOutputTensor.contents)
    return float(struct.unpack_from("<f", _fields(tensor[5][0])[6][0])[0])


def rest_value(response: bytes) -> float:
    """The first output value of a V2 JSON inference response."""
    return float(json.loads(response)["outputs"][0]["data"][0])


# ---- finding the peers --------------------------------------------------------------------------


def _mlserver_bin() -> Path:
    return Path(os.environ.get("ASERVE_MLSERVER", "/work/peers/mlserver/bin/mlserver"))


def _triton_bin() -> Path:
    if "ASERVE_TRITON" in os.environ:
        return Path(os.environ["ASERVE_TRITON"])
    pattern = (
        "/work/peers/triton/lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"
    )
    found = sorted(glob.glob(pattern))
    return Path(found[-1] if found else pattern.replace("python3.*", "python3.11"))


def _where(peer: str) -> Path:
    if peer in _MLSERVER_WORKERS:
        return _mlserver_bin()
    if peer == "triton":
        return _triton_bin()
    raise ValueError(f"unknown peer {peer!r}; known: {', '.join(PEERS)}")


def available() -> dict[str, str]:
    """Peer name -> where it was found, or why it is not available."""
    out = {}
    for peer in PEERS:
        path = _where(peer)
        var = f"ASERVE_{peer.split('-')[0].upper()}"
        if os.access(path, os.X_OK):
            out[peer] = f"found: {path}"
        else:
            out[peer] = f"not installed: {path} missing (set {var}; see loadtests/PEERS.md)"
    return out


# ---- running them -----------------------------------------------------------------------------


def _prepare_mlserver(
    work: Path, batching: bool, rest_port: int, grpc_port: int, workers: int
) -> list[str]:
    shutil.copytree(_HERE / "mlserver", work, dirs_exist_ok=True)
    settings = json.loads((work / "settings.json").read_text())
    settings.update(
        host="127.0.0.1", http_port=rest_port, grpc_port=grpc_port, parallel_workers=workers
    )
    (work / "settings.json").write_text(json.dumps(settings))
    if not batching:
        model_settings = work / MODEL / "model-settings.json"
        ms = json.loads(model_settings.read_text())
        ms.pop("max_batch_size", None)
        ms.pop("max_batch_time", None)
        model_settings.write_text(json.dumps(ms))
    return [str(_mlserver_bin()), "start", str(work)]


def _prepare_triton(
    work: Path, batching: bool, rest_port: int, grpc_port: int, env: dict[str, str]
) -> list[str]:
    binary = _triton_bin()
    dist = binary.parent.parent  # .../tritonserver (pytriton) or /opt/tritonserver (NGC image)
    backends = dist / "backends"
    if (dist / "python_backend_stubs").is_dir():
        # nvidia-pytriton layout: the Python backend's stub ships per Python version; assemble a
        # backend directory with the one matching the venv, as pytriton itself does at run time.
        site = dist.parent.parent  # .../lib/python3.X/site-packages
        version = site.parent.name.removeprefix("python")
        backends = work / "backends"
        shutil.copytree(dist / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy(stub, backends / "python")
        # The stub embeds libpython3.X.so (the venv's base Python's, else the system's) and finds
        # its packages (numpy) through the venv's `python3` on PATH.
        venv = site.parents[2]
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        cfg = (venv / "pyvenv.cfg").read_text()
        home = next((ln.split("=", 1)[1].strip() for ln in cfg.splitlines() if "home" in ln), "")
        libs = [str(Path(home).parent / "lib") if home else "", str(site / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [*libs, env.get("LD_LIBRARY_PATH")]))
    models = work / "models"
    shutil.copytree(_HERE / "triton", models)
    if not batching:
        config = models / MODEL / "config.pbtxt"
        lines = config.read_text().splitlines(keepends=True)
        config.write_text("".join(ln for ln in lines if not ln.startswith("dynamic_batching")))
    return [
        str(binary),
        f"--model-repository={models}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={rest_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=false",
        "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def _post(url: str, body: bytes, timeout: float = 5.0) -> bytes:
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with _NO_PROXY.open(request, timeout=timeout) as response:
        return bytes(response.read())


def _grpc_answer(target: str) -> float | None:
    """One real gRPC call (grpc-status checked), or None if grpcio is not importable here."""
    try:
        import grpc  # aserve's own dependency, not a peer's
    except ImportError:
        return None
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        call = channel.unary_unary(GRPC_METHOD)  # no serializers: bytes in, bytes out
        response: bytes = call(GRPC_BODY, timeout=10, wait_for_ready=True)
        return grpc_value(response)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerUnavailable(f"exited with {proc.returncode} while starting:\n{_tail(log)}")
        try:
            value = rest_value(_post(url, REST_BODY))
            if value != _EXPECTED:
                raise PeerUnavailable(f"answered {value} for x={_X}, expected {_EXPECTED}")
            return
        except (OSError, ValueError, KeyError) as e:  # not listening / model not ready yet
            last = e
        time.sleep(0.2)
    raise PeerUnavailable(f"not ready after {_START_TIMEOUT_S:.0f} s ({last}):\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the peer (it stops its own workers / Python stubs), then SIGKILL what is left."""
    proc.terminate()  # not the whole group: a stub killed under Triton can leak its /dev/shm region
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its process group: anything left behind
    proc.wait()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def running(
    peer: str, *, batching: bool = True, rest_port: int, grpc_port: int
) -> Iterator[PeerEndpoint]:
    """Start `peer` on 127.0.0.1 serving half_plus_two; yield once it answers 2.5; stop it.

    batching=True: at most 32 examples per model call, waiting at most 2 ms to fill a batch
    (MLServer adaptive batching, Triton dynamic batching). Raises PeerUnavailable when the peer
    is not installed or does not come up.
    """
    binary = _where(peer)
    if not os.access(binary, os.X_OK):
        raise PeerUnavailable(f"{peer}: {available()[peer]}")
    for port in (rest_port, grpc_port):
        if not _port_free(port):
            raise PeerUnavailable(f"{peer}: port {port} on 127.0.0.1 is already in use")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)  # aserve's venv, if any, must not leak into the peer's
    with tempfile.TemporaryDirectory(prefix=f"aserve-peer-{peer}-") as tmp:
        work, log = Path(tmp) / "work", Path(tmp) / "server.log"
        if peer in _MLSERVER_WORKERS:
            argv = _prepare_mlserver(work, batching, rest_port, grpc_port, _MLSERVER_WORKERS[peer])
        else:
            argv = _prepare_triton(work, batching, rest_port, grpc_port, env)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so _stop reaches its children
            )
        try:
            base = f"http://127.0.0.1:{rest_port}"
            url = f"{base}/v2/models/{MODEL}/infer"
            _wait_ready(proc, url, log)
            target = f"127.0.0.1:{grpc_port}"
            try:
                answer = _grpc_answer(target)
            except Exception as e:  # grpc.RpcError: no answer, or a non-OK grpc-status
                raise PeerUnavailable(f"{peer}: gRPC check failed: {e}\n{_tail(log)}") from e
            if answer is not None and answer != _EXPECTED:
                raise PeerUnavailable(f"{peer}: gRPC answered {answer}, expected {_EXPECTED}")
            with _NO_PROXY.open(f"{base}/v2", timeout=5) as response:
                meta = json.loads(response.read())
            name = "Triton" if peer == "triton" else "MLServer"
            setup = {"mlserver": " (1 worker process, default)", "mlserver-inline": " (inline)"}
            yield PeerEndpoint(
                name=f"{name} {meta.get('version', '?')}{setup.get(peer, '')}",
                rest_url=url,
                rest_body=REST_BODY,
                grpc_target=target,
                grpc_method=GRPC_METHOD,
                grpc_body=GRPC_BODY,
                expected=_EXPECTED,
            )
        finally:
            _stop(proc)


if __name__ == "__main__":  # python loadtests/peers.py: start each available peer and check it
    for i, (peer, how) in enumerate(available().items()):
        print(f"{peer}: {how}")
        if how.startswith("found"):
            with running(peer, rest_port=18500 + 10 * i, grpc_port=18501 + 10 * i) as ep:
                print(f"  {ep.name} answers {ep.expected} on {ep.rest_url} and {ep.grpc_target}")
