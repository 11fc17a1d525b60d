"""Log lines: aserve's own (text or JSON) and the access log, one line per request.

``--log_format=json`` makes every line one JSON object, so log collectors need no parsing
rules: aserve's own lines carry ``time``, ``level``, ``logger``, ``message`` (and
``exception``); access-log lines carry exactly the keys of :data:`ACCESS_KEYS`.

The access log is an observer of the per-request records. On the event loop it only puts
the finished record on a queue (~0.3 µs); a writer thread formats and writes the lines and
flushes whenever the queue runs dry, so a slow disk never blocks the loop.
"""

from __future__ import annotations

import datetime
import json
import logging
import queue
import sys
import threading
from typing import IO, Final

from aserve.records import RequestRecord

ACCESS_KEYS: Final = (
    "time",
    "request_id",
    "protocol",
    "api",
    "model",
    "version",
    "label",
    "signature",
    "status",
    "http_status",
    "latency_ms",
    "batch_size",
    "bytes_in",
    "bytes_out",
    "peer",
)
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str, log_format: str) -> None:
    """aserve's own log lines on stderr, as text or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.error", "tensorflow"):  # aserve logs its own start-up and loads
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # TensorFlow gives its logger a handler of its own when imported before logging is set
    # up (it is, by the gRPC API's imports); its lines then came out twice, one not as JSON
    logging.getLogger("tensorflow").handlers.clear()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class AccessLog:
    """An observer writing one line per finished request to a file, or to stderr."""

    def __init__(self, target: str, *, log_format: str = "text") -> None:
        if target == "stderr":
            self._stream: IO[str] = sys.stderr
            self._owned = False
        else:
            self._stream = open(target, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
            self._owned = True
        self._format = _json_line if log_format == "json" else _text_line
        self._queue: queue.SimpleQueue[RequestRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="aserve-access-log", daemon=True)
        self._thread.start()

    def request_finished(self, record: RequestRecord) -> None:
        self._queue.put(record)

    def close(self) -> None:
        """Write what is queued, then stop (blocking: call it off the loop)."""
        self._queue.put(None)
        self._thread.join()
        if self._owned:
            self._stream.close()

    def _write(self) -> None:
        stream, format_line, pending = self._stream, self._format, self._queue
        while (record := pending.get()) is not None:
            stream.write(format_line(record))
            if pending.empty():
                stream.flush()
        stream.flush()


def _fields(record: RequestRecord) -> dict[str, object]:
    return {
        "time": _rfc3339(record.wall),
        "request_id": record.request_id,
        "protocol": record.protocol,
        "api": record.api,
        "model": record.model,
        "version": record.version,
        "label": record.label,
        "signature": record.signature,
        "status": record.code.name,
        "http_status": record.http_status,
        "latency_ms": round(record.latency * 1000, 3),
        "batch_size": record.batch_size,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "peer": record.peer,
    }


def _json_line(record: RequestRecord) -> str:
    return json.dumps(_fields(record), ensure_ascii=False) + "\n"


def _text_line(record: RequestRecord) -> str:
    """``<time> <peer> <protocol> <api> key=value ...``, with ``-`` for what is unknown."""
    f = _fields(record)
    head = f"{f['time']} {f['peer'] or '-'} {f['protocol']} {f['api'] or '-'}"
    pairs = " ".join(
        f"{key}={'-' if f[key] in (None, '') else f[key]}"
        for key in ACCESS_KEYS[4:-1]  # model .. bytes_out
    )
    return f"{head} {pairs} id={f['request_id']}\n"


def _rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
