"""Command-line flags: argv -> one frozen :class:`ServerOptions`.

aserve accepts every ``tensorflow_model_server`` flag with TF's type and default, except
``--model_name`` (default ``model``, as in the TF Serving Docker image) and ``--rest_api_port``
(default 8501), and adds a few flags of its own. The fields of :class:`ServerOptions` *are* the
flag table: each field carries its value kind, help group and one-line meaning, so parsing,
``--help`` and defaults come from one place.

Syntax: ``--flag=value`` or ``--flag value``; a boolean also takes a bare ``--flag`` or a
following ``true``/``false``/``1``/``0`` word; ``-flag`` means ``--flag``; a repeated flag keeps
its last value. Call sequence in ``__main__``::

    options = flags.parse_or_exit(sys.argv[1:])   # exits 0 on --help/--version, 2 on misuse
    for name in options.ignored_flags:            # TF flags aserve accepts but does not apply
        log.warning(...)

This module imports only the standard library so that ``--help`` answers at once.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Final, NoReturn, TextIO, TypeVar

__all__ = ["IMPLEMENTED", "HelpRequested", "ServerOptions", "UsageError", "parse", "parse_or_exit"]

# Flags whose behaviour aserve implements. Every other TF flag is accepted, reported in
# ServerOptions.ignored_flags when given, and marked "no effect yet" in --help.
IMPLEMENTED: Final[frozenset[str]] = frozenset(
    {
        # serving endpoints
        "port",
        "grpc_socket_path",
        "rest_api_port",
        "rest_api_timeout_in_ms",
        "rest_api_enable_cors_support",
        "grpc_channel_arguments",
        "enable_grpc_healthcheck_service",
        "enable_serialization_as_tensor_content",
        # models
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "model_base_path",
        "num_load_threads",
        "num_unload_threads",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "file_system_poll_wait_seconds",
        "allow_version_labels_for_unavailable_models",
        "saved_model_tags",
        "enable_signature_method_name_check",
        "enable_model_warmup",
        "num_request_iterations_for_warmup",
        # batching
        "enable_batching",
        "batching_parameters_file",
        "enable_per_model_batching_parameters",
        # TensorFlow
        "tensorflow_session_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "tensorflow_session_config_file",
        "per_process_gpu_memory_fraction",
        # TLS / monitoring / general
        "ssl_config_file",
        "monitoring_config_file",
        "version",
        # aserve extensions (always implemented)
        "host",
        "rest_api_host",
        "grpc_host",
        "rest_api_max_body_bytes",
        "num_worker_threads",
        "device",
        "log_level",
        "shutdown_grace_seconds",
        "codec_offload_us",
        "max_request_elements",
        "max_request_bytes",
        "max_queued_requests",
        "rest_api_header_timeout_seconds",
        "rest_api_keepalive_seconds",
        "max_connections",
        "rest_server",
        "grpc_server",
        "listen_before_load",
        "drain_delay_seconds",
        "access_log",
        "log_format",
        "auth_token_file",
        "admin_token_file",
        "auth_metrics",
        "allowed_model_roots",
        "enable_model_management",
        "rest_api_ssl_certfile",
        "rest_api_ssl_keyfile",
        "rest_api_ssl_ca_file",
        # object storage, TFLite, custom ops, the profiler
        "prefer_tflite_model",
        "num_tflite_pools",
        "num_tflite_interpreters_per_pool",
        "enable_profiler",
        "model_cache_dir",
        "custom_op_paths",
    }
)

_ALIASES: Final[Mapping[str, str]] = {"config": "model_config_file"}
_HELP_WORDS: Final = frozenset({"--help", "-help", "-h"})
_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)


def _schedulable_cpus() -> int:
    """CPUs this process may run on (affinity and cgroup quota; TF's NumSchedulableCPUs)."""
    from aserve.cpus import usable_cpus  # standard library only

    return usable_cpus().usable


_CPUS: Final = _schedulable_cpus()

_T = TypeVar("_T")


class UsageError(Exception):
    """A bad command line. ``str(error)`` is one user-facing line (newlines are escaped)."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class HelpRequested(Exception):
    """``--help`` (or ``-h``) was given; :func:`parse_or_exit` prints the help and exits 0."""


# --- value kinds -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Kind:
    """How a flag's text becomes a value. ``convert`` raises ValueError("<what is expected>")."""

    metavar: str
    convert: Callable[[str], object]
    show: Callable[[object], str] = str
    is_bool: bool = False


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "false", "0"):
        return lowered in ("true", "1")
    raise ValueError("true, false, 1 or 0")


def _expected_integer(lo: int, hi: int) -> str:
    if (lo, hi) == _INT32:
        return "a 32-bit integer"
    if (lo, hi) == _INT64:
        return "a 64-bit integer"
    if hi in (_INT32[1], _INT64[1]):
        return f"an integer >= {lo}"
    return f"an integer in {lo}..{hi}"


def _integer(lo: int, hi: int) -> Callable[[str], object]:
    def convert(text: str) -> int:
        if len(text) > 21 or not re.fullmatch(r"[+-]?[0-9]+", text) or not lo <= int(text) <= hi:
            raise ValueError(_expected_integer(lo, hi))
        return int(text)

    return convert


def _number_at_least(lo: float) -> Callable[[str], object]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if "_" in text or not math.isfinite(value) or value < lo:
            raise ValueError(f"a number >= {lo:g}")
        return value

    return convert


def _host(text: str) -> str:
    if not text:
        raise ValueError("a host name or IP address")
    return text


def _comma_list(expected: str) -> Callable[[str], tuple[str, ...]]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; nothing at all is an error naming ``expected``."""

    def convert(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        if not items:
            raise ValueError(expected)
        return items

    return convert


_tags = _comma_list("comma-separated tags such as serve,gpu")


def _channel_argument(item: str) -> tuple[str, int | str]:
    key, equals, value = (part.strip() for part in item.partition("="))
    if not equals or not key:
        raise ValueError("comma-separated key=value pairs")
    is_int32 = re.fullmatch(r"[+-]?[0-9]{1,10}", value) and _INT32[0] <= int(value) <= _INT32[1]
    return key, int(value) if is_int32 else value


def _channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """TF's ``k=v,k=v``; values that parse as int32 become ints (as TF passes them to gRPC)."""
    return tuple(_channel_argument(item) for item in text.split(",") if item.strip())


_paths = _comma_list("comma-separated folders or URLs")
_files = _comma_list("comma-separated files")


def _log_format(text: str) -> str:
    if text.lower() not in ("text", "json"):
        raise ValueError("text or json")
    return text.lower()


def _choice(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(" or ".join(choices))
        return text.lower()

    return convert


def _log_level(text: str) -> str:
    if text.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("debug, info, warning or error")
    return text.lower()


def _show_bool(value: object) -> str:
    return "true" if value else "false"


def _show_str(value: object) -> str:
    return str(value) if value else '""'


def _show_tuple(value: object) -> str:
    items = value if isinstance(value, tuple) else ()
    text = ",".join(f"{i[0]}={i[1]}" if isinstance(i, tuple) else str(i) for i in items)
    return text or '""'


def _int_kind(lo: int, hi: int, metavar: str = "INT") -> _Kind:
    return _Kind(metavar=metavar, convert=_integer(lo, hi))


_BOOL: Final = _Kind(metavar="BOOL", convert=_boolean, show=_show_bool, is_bool=True)
_STR: Final = _Kind(metavar="STR", convert=str, show=_show_str)
_PATH: Final = _Kind(metavar="PATH", convert=str, show=_show_str)
_HOST: Final = _Kind(metavar="HOST", convert=_host, show=_show_str)
_HOST_OR_EMPTY: Final = _Kind(metavar="HOST", convert=str, show=_show_str)
_PORT: Final = _int_kind(0, 65535, "PORT")
_I32: Final = _int_kind(*_INT32)
_I64: Final = _int_kind(*_INT64)
_COUNT: Final = _int_kind(0, _INT32[1], "N")  # 0 has a meaning (auto / none / once)
_THREADS: Final = _int_kind(1, _INT32[1], "N")
_BYTES: Final = _int_kind(1, _INT64[1], "BYTES")
_FRACTION: Final = _Kind(metavar="FLOAT", convert=_number_at_least(0.0))
_SECONDS: Final = _Kind(metavar="SECONDS", convert=_number_at_least(0.0))
_TAGS: Final = _Kind(metavar="TAGS", convert=_tags, show=_show_tuple)
_CHANNEL_ARGS: Final = _Kind(metavar="K=V,...", convert=_channel_arguments, show=_show_tuple)
_LEVEL: Final = _Kind(metavar="LEVEL", convert=_log_level)
_FORMAT: Final = _Kind(metavar="FORMAT", convert=_log_format)
_REST_SERVER: Final = _Kind(metavar="SERVER", convert=_choice("aserve", "uvicorn"))
_GRPC_SERVER: Final = _Kind(metavar="SERVER", convert=_choice("native", "grpcio"))
_FOLDERS: Final = _Kind(metavar="DIR,...", convert=_paths, show=_show_tuple)
_FILES: Final = _Kind(metavar="FILE,...", convert=_files, show=_show_tuple)

# --- the flag table ----------------------------------------------------------------------------

_ENDPOINTS: Final = "serving endpoints"
_MODELS: Final = "models"
_BATCHING: Final = "batching"
_TF: Final = "TensorFlow"
_SECURITY: Final = "TLS and monitoring"
_ASERVE: Final = "aserve extensions (not in tensorflow_model_server)"
_OPERATIONS: Final = "operations: start-up, drain, logs, authentication (aserve)"
_GENERAL: Final = "general"
_GROUPS: Final = (_ENDPOINTS, _MODELS, _BATCHING, _TF, _SECURITY, _ASERVE, _OPERATIONS, _GENERAL)
_SPEC: Final = "aserve.flag"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Spec:
    kind: _Kind
    group: str
    meaning: str
    shown_default: str | None = None


def _flag(default: _T, kind: _Kind, group: str, meaning: str, *, shown: str | None = None) -> _T:
    spec = _Spec(kind=kind, group=group, meaning=meaning, shown_default=shown)
    return field(default=default, metadata={_SPEC: spec})


_4CPUS: Final = f"{4 * _CPUS} = 4 x CPUs"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """Every server setting, one field per flag (named as the flag), built once from argv.

    Construct it with :func:`parse` (which also validates flag combinations) or directly in
    tests. ``rest_api_host``/``grpc_host`` left empty take the value of ``host``.
    ``ignored_flags`` names, in argv order, the TF flags the user passed that are not in
    :data:`IMPLEMENTED`; the server logs one warning per entry.
    """

    # serving endpoints
    port: int = _flag(8500, _PORT, _ENDPOINTS, "gRPC TCP port; 0 = no TCP gRPC listener")
    grpc_socket_path: str = _flag("", _PATH, _ENDPOINTS, "also serve gRPC on this UNIX socket path")
    rest_api_port: int = _flag(8501, _PORT, _ENDPOINTS, "HTTP/REST port; 0 = REST disabled")
    rest_api_num_threads: int = _flag(
        4 * _CPUS, _THREADS, _ENDPOINTS, "HTTP worker threads", shown=_4CPUS
    )
    rest_api_timeout_in_ms: int = _flag(
        30000, _I32, _ENDPOINTS, "per-REST-call model run timeout; <= 0 = none"
    )
    rest_api_enable_cors_support: bool = _flag(
        False, _BOOL, _ENDPOINTS, "add CORS headers to REST responses"
    )
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = _flag(
        (), _CHANNEL_ARGS, _ENDPOINTS, "gRPC server options, e.g. grpc.max_connection_age_ms=2000"
    )
    grpc_max_threads: int = _flag(
        4 * _CPUS, _THREADS, _ENDPOINTS, "max gRPC server threads", shown=_4CPUS
    )
    enable_grpc_healthcheck_service: bool = _flag(
        False, _BOOL, _ENDPOINTS, "serve the standard grpc.health.v1.Health service"
    )
    enable_serialization_as_tensor_content: bool = _flag(
        False, _BOOL, _ENDPOINTS, "gRPC Predict replies use TensorProto.tensor_content"
    )
    enable_profiler: bool = _flag(
        True, _BOOL, _ENDPOINTS, "serve TensorFlow's ProfilerService on the gRPC port"
    )
    # models
    model_config_file: str = _flag(
        "", _PATH, _MODELS, "text ModelServerConfig; overrides --model_name/--model_base_path"
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0, _I32, _MODELS, "re-read --model_config_file every N s; 0 = read once"
    )
    model_name: str = _flag("model", _STR, _MODELS, "model name in single-model mode")
    model_base_path: str = _flag(
        "", _PATH, _MODELS, "directory of numeric version dirs (single-model mode)"
    )
    num_load_threads: int = _flag(0, _COUNT, _MODELS, "model-load threads; 0 = one per CPU")
    num_unload_threads: int = _flag(0, _COUNT, _MODELS, "model-unload threads; 0 = unload serially")
    max_num_load_retries: int = _flag(
        5, _COUNT, _MODELS, "load retries after a failed load; 0 = one attempt"
    )
    load_retry_interval_micros: int = _flag(
        60_000_000, _I64, _MODELS, "wait between load retries; negative = no wait"
    )
    file_system_poll_wait_seconds: int = _flag(
        1, _I32, _MODELS, "version-directory poll period; 0 = once, negative = never"
    )
    flush_filesystem_caches: bool = _flag(
        True, _BOOL, _MODELS, "flush filesystem caches after loads"
    )
    allow_version_labels_for_unavailable_models: bool = _flag(
        False, _BOOL, _MODELS, "allow a new label to point at a version not yet AVAILABLE"
    )
    saved_model_tags: tuple[str, ...] = _flag(
        ("serve",), _TAGS, _MODELS, "comma-separated MetaGraph tags to load"
    )
    enable_model_warmup: bool = _flag(
        True, _BOOL, _MODELS, "replay assets.extra/tf_serving_warmup_requests at load"
    )
    num_request_iterations_for_warmup: int = _flag(
        0, _COUNT, _MODELS, "replay each warmup record N times if N > 0"
    )
    enable_signature_method_name_check: bool = _flag(
        False, _BOOL, _MODELS, "require SignatureDef method_name to match the API called"
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True, _BOOL, _MODELS, "keep only signature_def of the MetaGraphDef in memory"
    )
    prefer_tflite_model: bool = _flag(
        False, _BOOL, _MODELS, "EXPERIMENTAL: load model.tflite instead of saved_model.pb"
    )
    num_tflite_pools: int = _flag(
        _CPUS, _THREADS, _MODELS, "EXPERIMENTAL: TFLite interpreter pools", shown=f"{_CPUS} = CPUs"
    )
    num_tflite_interpreters_per_pool: int = _flag(
        1, _THREADS, _MODELS, "EXPERIMENTAL: TFLite interpreters per pool"
    )
    # batching
    enable_batching: bool = _flag(False, _BOOL, _BATCHING, "batch requests on the server")
    batching_parameters_file: str = _flag(
        "", _PATH, _BATCHING, "text BatchingParameters; needs --enable_batching"
    )
    enable_per_model_batching_parameters: bool = _flag(
        False, _BOOL, _BATCHING, "read <version_dir>/batching_params.pbtxt per model"
    )
    # TensorFlow
    tensorflow_session_parallelism: int = _flag(
        0, _I64, _TF, "threads for both intra- and inter-op pools; 0 = auto"
    )
    tensorflow_intra_op_parallelism: int = _flag(
        0, _I64, _TF, "threads to parallelise one op; 0 = auto"
    )
    tensorflow_inter_op_parallelism: int = _flag(0, _I64, _TF, "ops run concurrently; 0 = auto")
    tensorflow_session_config_file: str = _flag(
        "", _PATH, _TF, "text TensorFlow ConfigProto for sessions"
    )
    per_process_gpu_memory_fraction: float = _flag(
        0.0, _FRACTION, _TF, "fraction of GPU memory to claim; 0 = TensorFlow decides"
    )
    platform_config_file: str = _flag(
        "", _PATH, _TF, "text PlatformConfigMap replacing the built-in TensorFlow platform"
    )
    xla_cpu_compilation_enabled: bool = _flag(False, _BOOL, _TF, "EXPERIMENTAL: enable XLA:CPU JIT")
    xla_gpu_compilation_enabled: bool = _flag(
        False, _BOOL, _TF, "EXPERIMENTAL: enable XLA:CPU and XLA:GPU JIT"
    )
    thread_pool_factory_config_file: str = _flag(
        "", _PATH, _TF, "text ThreadPoolFactoryConfig for per-request thread pools"
    )
    mixed_precision: str = _flag("", _STR, _TF, "mixed-precision mode; only bfloat16 is known")
    skip_initialize_tpu: bool = _flag(False, _BOOL, _TF, "skip TPU system initialisation")
    # TLS and monitoring
    ssl_config_file: str = _flag("", _PATH, _SECURITY, "text SSLConfig: serve gRPC over TLS")
    use_alts_credentials: bool = _flag(
        False, _BOOL, _SECURITY, "use Google ALTS credentials for gRPC"
    )
    monitoring_config_file: str = _flag(
        "", _PATH, _SECURITY, "text MonitoringConfig (Prometheus endpoint on the REST port)"
    )
    # aserve extensions
    host: str = _flag("0.0.0.0", _HOST, _ASERVE, "listen address for both REST and gRPC")
    rest_api_host: str = _flag(
        "", _HOST_OR_EMPTY, _ASERVE, "listen address for REST", shown="the value of --host"
    )
    grpc_host: str = _flag(
        "", _HOST_OR_EMPTY, _ASERVE, "listen address for TCP gRPC", shown="the value of --host"
    )
    rest_api_max_body_bytes: int = _flag(
        64 * 1024 * 1024, _BYTES, _ASERVE, "larger REST request bodies get HTTP 413"
    )
    max_queued_requests: int = _flag(
        128,
        _COUNT,
        _ASERVE,
        "requests of one model version waiting for a worker (without batching); more get "
        "UNAVAILABLE / 503 at once; 0 = no bound",
    )
    rest_api_header_timeout_seconds: float = _flag(
        10.0,
        _SECONDS,
        _ASERVE,
        "a REST request's headers must arrive within this of the connection opening or of "
        "the request's first byte; 0 = no limit",
    )
    rest_api_keepalive_seconds: float = _flag(
        75.0, _SECONDS, _ASERVE, "close an idle REST keep-alive connection after this"
    )
    max_connections: int = _flag(
        0,
        _COUNT,
        _ASERVE,
        "open connections per port; more are refused as they open; 0 = half the "
        "file-descriptor limit less 256",
    )
    rest_server: str = _flag(
        "aserve",
        _REST_SERVER,
        _ASERVE,
        "the HTTP/1.1 server under the REST API: aserve (its own, on httptools) or uvicorn",
    )
    grpc_server: str = _flag(
        "native",
        _GRPC_SERVER,
        _ASERVE,
        "the gRPC server: native (pygrpc-native, HTTP/2 in Rust) or grpcio (grpc.aio); "
        "native falls back to grpcio, with a log line, for what it cannot do (TLS)",
    )
    max_request_elements: int = _flag(
        2**26,
        _BYTES,
        _ASERVE,
        "one request's tensors may hold this many elements; more is INVALID_ARGUMENT / 400",
    )
    max_request_bytes: int = _flag(
        2**30,
        _BYTES,
        _ASERVE,
        "one request's tensors may decode to this many bytes; more is RESOURCE_EXHAUSTED / 413",
    )
    num_worker_threads: int = _flag(
        0, _COUNT, _ASERVE, "TensorFlow worker-pool size; 0 = number of CPUs"
    )
    device: str = _flag(
        "",
        _STR,
        _ASERVE,
        "place every model on this device, e.g. /device:GPU:0; empty = "
        "keep the SavedModel's own placement",
    )
    log_level: str = _flag("info", _LEVEL, _ASERVE, "debug, info, warning or error")
    shutdown_grace_seconds: float = _flag(
        30.0,
        _SECONDS,
        _OPERATIONS,
        "on SIGTERM/SIGINT, everything (drain delay, requests in flight, unloading) ends "
        "within this; what still runs then gets UNAVAILABLE / HTTP 503",
    )
    drain_delay_seconds: float = _flag(
        0.0,
        _SECONDS,
        _OPERATIONS,
        "on SIGTERM/SIGINT, report not ready but keep serving this long before refusing new "
        "connections (set it to the load balancer's deregistration time)",
    )
    listen_before_load: bool = _flag(
        False,
        _BOOL,
        _OPERATIONS,
        "open the ports before the start-up models have loaded (readiness answers 503 until "
        "they have); by default the ports open once they have loaded or failed, as in TF Serving",
    )
    access_log: str = _flag(
        "", _PATH, _OPERATIONS, "one line per request to this file, or 'stderr'; empty = off"
    )
    log_format: str = _flag(
        "text", _FORMAT, _OPERATIONS, "text or json, for the access log and aserve's own lines"
    )
    auth_token_file: str = _flag(
        "",
        _PATH,
        _OPERATIONS,
        "bearer tokens, one per line (re-read when it changes): every request needs one, "
        "except the health endpoints",
    )
    admin_token_file: str = _flag(
        "",
        _PATH,
        _OPERATIONS,
        "tokens for model management (config reloads); prediction tokens are refused there",
    )
    auth_metrics: bool = _flag(
        False, _BOOL, _OPERATIONS, "the Prometheus page needs a token too (with --auth_token_file)"
    )
    allowed_model_roots: tuple[str, ...] = _flag(
        (),
        _FOLDERS,
        _OPERATIONS,
        "every model base path must lie under one of these folders (symlinks resolved) or "
        "URLs (s3://bucket/prefix)",
    )
    enable_model_management: bool = _flag(
        False,
        _BOOL,
        _OPERATIONS,
        "serve the V2 repository API (load, unload one model; admin access); refused while "
        "--model_config_file_poll_wait_seconds polls the config file",
    )
    rest_api_ssl_certfile: str = _flag("", _PATH, _OPERATIONS, "serve REST over TLS: certificate")
    rest_api_ssl_keyfile: str = _flag("", _PATH, _OPERATIONS, "serve REST over TLS: private key")
    rest_api_ssl_ca_file: str = _flag(
        "", _PATH, _OPERATIONS, "REST clients must present a certificate from this CA (mTLS)"
    )
    # object storage and custom ops
    model_cache_dir: str = _flag(
        "",
        _PATH,
        _ASERVE,
        "versions of models in object storage (s3://, gs://, oss:// base paths) are "
        "downloaded here before they load, and removed after they unload",
        shown="<system temp dir>/aserve-model-cache",
    )
    custom_op_paths: tuple[str, ...] = _flag(
        (),
        _FILES,
        _ASERVE,
        "TensorFlow op libraries (.so) to load with tf.load_op_library before any model "
        "(tensorflow-text's ops load by themselves when it is installed)",
    )
    codec_offload_us: float = _flag(
        200.0,
        _Kind(metavar="MICROS", convert=_number_at_least(0.0)),
        _ASERVE,
        "decode or encode a request or answer in a codec thread, off the event loop, when "
        "it is estimated to cost more than this; 0 = always",
    )
    # general
    version: bool = _flag(False, _BOOL, _GENERAL, "print versions and exit")

    ignored_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("rest_api_host", "grpc_host"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.host)


_FLAGS: Final[Mapping[str, _Spec]] = {
    f.name: f.metadata[_SPEC] for f in fields(ServerOptions) if _SPEC in f.metadata
}
_DEFAULTS: Final[Mapping[str, object]] = {
    f.name: f.default for f in fields(ServerOptions) if _SPEC in f.metadata
}

# --- parsing -----------------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> ServerOptions:
    """Turn argv (without the program name) into validated options.

    Raises :class:`HelpRequested` if ``--help``/``-h`` is present, :class:`UsageError` for an
    unknown argument, a malformed value or a bad flag combination. Never prints, never exits.
    With ``--version`` the flag-combination checks are skipped.
    """
    if any(word in _HELP_WORDS for word in argv):
        raise HelpRequested()
    given = _scan(list(argv))
    ignored = tuple(name for name in given if name not in IMPLEMENTED)
    options = ServerOptions(**given, ignored_flags=ignored)  # type: ignore[arg-type]
    if not options.version:
        for check in _CHECKS:
            check(options)
    return options


def parse_or_exit(argv: Sequence[str]) -> ServerOptions:
    """:func:`parse` for ``__main__``: handles ``--help``, ``--version`` and usage errors.

    ``--help`` prints the help to stdout and exits 0; ``--version`` prints the versions and
    exits 0; a :class:`UsageError` prints ``aserve: error: <message>`` to stderr and exits 2.
    """
    try:
        options = parse(argv)
    except HelpRequested:
        _exit(0, _help_text(), sys.stdout)
    except UsageError as error:
        _exit(2, f"aserve: error: {error}\n", sys.stderr)
    if options.version:
        _exit(0, _version_text(), sys.stdout)
    return options


def _exit(code: int, text: str, stream: TextIO) -> NoReturn:
    stream.write(text)
    raise SystemExit(code)


def _scan(argv: list[str]) -> dict[str, object]:
    """Flag name -> converted value, in order of first appearance; a repeat keeps the last."""
    given: dict[str, object] = {}
    index = 0
    while index < len(argv):
        name, value, index = _take(argv, index)
        given[name] = value
    return given


def _take(argv: list[str], index: int) -> tuple[str, object, int]:
    """Read the flag at ``argv[index]`` (and its value word, if separate); return the next index."""
    word = argv[index]
    name, equals, text = _flag_name(word).partition("=")
    if name not in _FLAGS:
        raise UsageError(f"unknown argument: {word}")
    following = argv[index + 1] if index + 1 < len(argv) else None
    kind = _FLAGS[name].kind
    if equals:
        return name, _convert(name, text), index + 1
    if kind.is_bool:
        if following is not None and following.lower() in ("true", "false", "1", "0"):
            return name, _boolean(following), index + 2
        return name, True, index + 1
    if following is None or _looks_like_flag(following):
        raise UsageError(f"--{name} requires a value")
    return name, _convert(name, following), index + 2


def _flag_name(word: str) -> str:
    """``--name[=v]`` or ``-name[=v]`` -> ``name[=v]`` with aliases resolved; else ``""``."""
    if not word.startswith("-") or word.startswith("---"):
        return ""
    name, equals, text = word.lstrip("-").partition("=")
    return _ALIASES.get(name, name) + equals + text


def _looks_like_flag(word: str) -> bool:
    return (
        word.startswith("--")
        or word in _HELP_WORDS
        or (word.startswith("-") and _flag_name(word).partition("=")[0] in _FLAGS)
    )


def _convert(name: str, text: str) -> object:
    try:
        return _FLAGS[name].kind.convert(text)
    except ValueError as error:
        raise UsageError(f"invalid value for --{name}: {text!r} (expected {error})") from None


# --- flag-combination checks, in TF's BuildAndStart order ----------------------------------------


def _check_grpc_listener(options: ServerOptions) -> None:
    if options.port == 0 and not options.grpc_socket_path:
        raise UsageError(
            "At least one of server_options.grpc_port or "
            "server_options.grpc_socket_path must be set."
        )


def _check_credentials(options: ServerOptions) -> None:
    if options.use_alts_credentials and options.ssl_config_file:
        raise UsageError(
            "Either use_alts_credentials must be false or ssl_config_file must be empty."
        )


def _check_models(options: ServerOptions) -> None:
    config, base = options.model_config_file, options.model_base_path
    if not config and not base:
        raise UsageError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    if config and not os.path.exists(config):
        raise UsageError(f"--model_config_file={config} does not exist")
    if config and not os.path.isfile(config):
        raise UsageError(f"--model_config_file={config} is not a file")
    if not config and "://" not in base and not os.path.isdir(base):
        raise UsageError(f"--model_base_path={base} is not a directory")


def _check_batching(options: ServerOptions) -> None:
    if options.batching_parameters_file and not options.enable_batching:
        raise UsageError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )


def _check_parallelism(options: ServerOptions) -> None:
    if (
        min(
            options.tensorflow_session_parallelism,
            options.tensorflow_intra_op_parallelism,
            options.tensorflow_inter_op_parallelism,
        )
        > 0
    ):
        raise UsageError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all."
        )


def _check_operations(options: ServerOptions) -> None:
    if options.drain_delay_seconds >= options.shutdown_grace_seconds > 0:
        raise UsageError(
            f"--drain_delay_seconds={options.drain_delay_seconds:g} must be shorter than "
            f"--shutdown_grace_seconds={options.shutdown_grace_seconds:g}"
        )
    if bool(options.rest_api_ssl_certfile) != bool(options.rest_api_ssl_keyfile):
        raise UsageError("--rest_api_ssl_certfile and --rest_api_ssl_keyfile go together")
    if options.rest_api_ssl_ca_file and not options.rest_api_ssl_certfile:
        raise UsageError("--rest_api_ssl_ca_file needs --rest_api_ssl_certfile")
    for path in (options.auth_token_file, options.admin_token_file):
        if path and not os.path.isfile(path):
            raise UsageError(f"{path} (a token file) is not a file")
    for root in options.allowed_model_roots:
        if "://" not in root and not os.path.isdir(root):
            raise UsageError(f"--allowed_model_roots: {root} is not a directory")


def _check_custom_ops(options: ServerOptions) -> None:
    for path in options.custom_op_paths:
        if not os.path.isfile(path):
            raise UsageError(f"--custom_op_paths: {path} is not a file")


_CHECKS: Final[tuple[Callable[[ServerOptions], None], ...]] = (
    _check_grpc_listener,
    _check_credentials,
    _check_models,
    _check_batching,
    _check_parallelism,
    _check_operations,
    _check_custom_ops,
)

# --- help and version --------------------------------------------------------------------------

_USAGE: Final = """\
usage: aserve [--flag=value | --flag value | --bool_flag[=true|false]] ...

A drop-in replacement for tensorflow_model_server. It takes the same flags (also as -flag);
defaults differ only for --model_name (model) and --rest_api_port (8501), as in the TF Serving
Docker image. Exit status: 0 after --help/--version, 2 on a bad command line.
"""
_NO_EFFECT: Final = " (accepted for compatibility; no effect yet)"


def _help_text() -> str:
    lines = [_USAGE]
    for group in _GROUPS:
        lines.append(f"{group}:")
        lines.extend(_help_row(name, spec) for name, spec in _FLAGS.items() if spec.group == group)
        lines.extend(
            _alias_row(alias, target) for alias, target in _ALIASES.items() if group == _ASERVE
        )
        if group == _GENERAL:
            lines.append("  --help, -h\n      print this help and exit")
        lines.append("")
    return "\n".join(lines)


def _help_row(name: str, spec: _Spec) -> str:
    kind = spec.kind
    usage = f"--{name}[=BOOL]" if kind.is_bool else f"--{name}={kind.metavar}"
    default = spec.shown_default or kind.show(_DEFAULTS[name])
    note = "" if name in IMPLEMENTED else _NO_EFFECT
    return f"  {usage}  (default: {default})\n      {spec.meaning}{note}"


def _alias_row(alias: str, target: str) -> str:
    return f"  --{alias}={_FLAGS[target].kind.metavar}\n      same as --{target}"


def _version_text() -> str:
    aserve = _distribution_version(("aserve",)) or "unknown"
    tensorflow = _distribution_version(("tensorflow", "tensorflow-cpu", "tf-nightly"))
    return (
        f"TensorFlow ModelServer: aserve {aserve}\n"
        f"TensorFlow Library: {tensorflow or 'not installed'}\n"
    )


def _distribution_version(names: Sequence[str]) -> str | None:
    from importlib import metadata  # only for --version: keeps --help fast

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
