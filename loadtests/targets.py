"""Where load goes: parse REST URLs and gRPC targets, and refuse anything off this machine.

Load tools here only ever talk to loopback addresses (``127.0.0.0/8``, ``::1`` or the
name ``localhost``); other names are refused without being resolved.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A loopback host and port, plus the HTTP path for REST."""

    host: str
    port: int
    path: str = "/"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def require_loopback(host: str) -> str:
    """Return ``host`` if it is a loopback address or ``localhost``, else raise ValueError."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"refusing to load non-loopback host {host!r}: use 127.0.0.1")


def rest_endpoint(url: str) -> Endpoint:
    """Parse ``http://127.0.0.1:8501/v1/models/m:predict`` (http only, loopback only)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http://host:port/path URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Endpoint(require_loopback(parts.hostname), parts.port or 80, path)


def grpc_endpoint(target: str) -> Endpoint:
    """Parse ``127.0.0.1:8500`` or ``[::1]:8500`` (loopback only)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {target!r}")
    return Endpoint(require_loopback(host.strip("[]")), int(port), PREDICT_PATH)


def predict_url(base_url: str, model: str) -> str:
    """``base_url`` as is if it has a path, else TF Serving's predict URL for ``model``."""
    if urlsplit(base_url).path not in ("", "/"):
        return base_url
    return f"{base_url.rstrip('/')}/v1/models/{model}:predict"
