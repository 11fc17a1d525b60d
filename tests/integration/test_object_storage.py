"""Models in object storage: aserve (a real process) against a real S3 server on loopback.

The S3 server is moto's (``ThreadedMotoServer``), reached over real HTTP through s3fs and
botocore, configured only by the standard AWS variables (``AWS_ENDPOINT_URL`` as for MinIO).
Version 1 is half_plus_two (2.0 -> 3.0), later versions half_plus_three (2.0 -> 4.0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import HALF_PLUS_THREE, HALF_PLUS_TWO, AserveProcess, free_port, wait_until

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "models"


class S3:
    """A moto S3 server on a fixed loopback port that can be stopped and started again
    (moto keeps its buckets in this process, so they survive a restart)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        self._server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def upload(self, folder: Path, prefix: str, **extra: Any) -> None:
        client = self.client()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), **extra)

    def delete(self, prefix: str) -> None:
        client = self.client()
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        for item in listed.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    store = S3()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": store.url,
        "AWS_MAX_ATTEMPTS": "1",  # botocore's standard knob: a failed poll fails at once
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store.start()
    store.client().create_bucket(Bucket=BUCKET)
    yield store
    store.stop()


def predict(server: AserveProcess) -> float:
    response = httpx.post(f"{server.url}/v1/models/m:predict", json={"instances": [2.0]})
    assert response.status_code == 200, response.text
    return float(response.json()["predictions"][0])


def available(server: AserveProcess) -> set[int]:
    try:
        response = httpx.get(f"{server.url}/v1/models/m")
    except httpx.HTTPError:  # not listening yet
        return set()
    if response.status_code != 200:
        return set()
    statuses = response.json()["model_version_status"]
    return {int(s["version"]) for s in statuses if s["state"] == "AVAILABLE"}


def wait_for_versions(server: AserveProcess, versions: set[int]) -> None:
    wait_until(
        lambda: available(server) == versions,
        60,
        f"versions {versions} (now {available(server)})\n{server.log}",
    )


def test_versions_come_and_go_with_the_store_and_survive_its_outages(
    s3: S3, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cached = cache / "s3" / BUCKET / "m"
    s3.upload(HALF_PLUS_TWO / "00000123", "m/1")
    args = (
        "--model_name=m",
        f"--model_base_path=s3://{BUCKET}/m",
        f"--model_cache_dir={cache}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=5",
        "--load_retry_interval_micros=2000000",
    )
    with AserveProcess(*args) as server:
        wait_for_versions(server, {1})
        assert predict(server) == 3.0
        assert (cached / "1" / "saved_model.pb").is_file()

        # a new version in the store loads; the one it replaces unloads and leaves the cache
        s3.upload(HALF_PLUS_THREE / "00000123", "m/2")
        wait_for_versions(server, {2})
        assert predict(server) == 4.0
        wait_until(lambda: not (cached / "1").exists(), 10, "version 1's cache removed")

        # a version that cannot be downloaded whole never loads; the retry after it is fixed does
        s3.upload(HALF_PLUS_TWO / "00000123" / "assets", "m/3/zz", StorageClass="GLACIER")
        s3.upload(HALF_PLUS_THREE / "00000123", "m/3")
        server.wait_for_log("Could not download s3://models/m/3")
        assert sorted(p.name for p in cached.iterdir()) == ["2"]  # no partial folder
        assert predict(server) == 4.0
        s3.delete("m/3/zz")
        wait_for_versions(server, {3})

        # a version removed from the store unloads; the highest left is served again
        s3.delete("m/3")
        wait_for_versions(server, {2})
        wait_until(lambda: not (cached / "3").exists(), 10, "version 3's cache removed")

        # the store goes away: what is loaded keeps serving, every failed poll says so
        s3.stop()
        failed = f"model m: cannot list s3://{BUCKET}/m, the loaded versions keep serving"
        wait_until(lambda: server.log.count(failed) >= 3, 30, "three failed polls logged")
        assert predict(server) == 4.0
        s3.start()
        server.wait_for_log(f"model m: s3://{BUCKET}/m can be listed again")
        s3.upload(HALF_PLUS_TWO / "00000123", "m/4")
        wait_for_versions(server, {4})
        assert predict(server) == 3.0
    assert "Traceback" not in server.log, server.log


def test_a_missing_bucket_is_a_missing_base_path(s3: S3, tmp_path: Path) -> None:
    args = ("--model_name=m", "--model_base_path=s3://no-such-bucket/m")
    with AserveProcess(*args, f"--model_cache_dir={tmp_path}") as server:
        server.wait_for_log("Could not find base path s3://no-such-bucket/m for servable m")
        assert available(server) == set()
    assert os.listdir(tmp_path) == []
