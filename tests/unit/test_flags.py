"""aserve.flags: argv -> ServerOptions, TF Serving flag compatibility, usage errors."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

from aserve import flags
from aserve.flags import IMPLEMENTED, HelpRequested, ServerOptions, UsageError, parse

REPO = pathlib.Path(__file__).resolve().parents[2]
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# Every flag of tensorflow_model_server (REFERENCE §1), with the value TF documents as its default.
TF_DEFAULTS: dict[str, str] = {
    "port": "8500",
    "grpc_socket_path": "",
    "rest_api_port": "0",
    "rest_api_num_threads": str(4 * CPUS),
    "rest_api_timeout_in_ms": "30000",
    "rest_api_enable_cors_support": "false",
    "enable_batching": "false",
    "allow_version_labels_for_unavailable_models": "false",
    "batching_parameters_file": "",
    "enable_per_model_batching_parameters": "false",
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": "0",
    "model_name": "default",
    "model_base_path": "",
    "num_load_threads": "0",
    "num_unload_threads": "0",
    "max_num_load_retries": "5",
    "load_retry_interval_micros": "60000000",
    "file_system_poll_wait_seconds": "1",
    "flush_filesystem_caches": "true",
    "tensorflow_session_parallelism": "0",
    "tensorflow_session_config_file": "",
    "tensorflow_intra_op_parallelism": "0",
    "tensorflow_inter_op_parallelism": "0",
    "use_alts_credentials": "false",
    "ssl_config_file": "",
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": "0",
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "",
    "grpc_max_threads": str(4 * CPUS),
    "enable_model_warmup": "true",
    "num_request_iterations_for_warmup": "0",
    "version": "false",
    "monitoring_config_file": "",
    "remove_unused_fields_from_bundle_metagraph": "true",
    "prefer_tflite_model": "false",
    "num_tflite_pools": str(CPUS),
    "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false",
    "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false",
    "enable_profiler": "true",
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": "false",
    "enable_grpc_healthcheck_service": "false",
    "enable_serialization_as_tensor_content": "false",
}
ASERVE_FLAGS = frozenset(
    {
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
        # object storage and custom ops
        "model_cache_dir",
        "custom_op_paths",
    }
)
NOT_IMPLEMENTED = frozenset(
    {
        "rest_api_num_threads",
        "grpc_max_threads",
        "flush_filesystem_caches",
        "use_alts_credentials",
        "platform_config_file",
        "remove_unused_fields_from_bundle_metagraph",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
        "thread_pool_factory_config_file",
        "mixed_precision",
        "skip_initialize_tpu",
    }
)
FLAG_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerOptions)) - {"ignored_flags"}


@pytest.fixture
def paths(tmp_path: pathlib.Path) -> dict[str, str]:
    """Placeholders for argv templates: an existing dir and file, and a path that is missing."""
    (tmp_path / "models.pbtxt").write_text("model_config_list {}\n")
    return {
        "dir": str(tmp_path),
        "file": str(tmp_path / "models.pbtxt"),
        "missing": str(tmp_path / "missing"),
    }


@pytest.fixture
def base(paths: dict[str, str]) -> list[str]:
    """The smallest valid command line."""
    return [f"--model_base_path={paths['dir']}"]


def render(words: str, paths: dict[str, str]) -> list[str]:
    return [word.format(**paths) for word in words.split()]


# --- the flag table -----------------------------------------------------------------------------


def test_every_tf_flag_is_a_field() -> None:
    assert set(TF_DEFAULTS) <= FLAG_FIELDS


def test_fields_are_tf_or_documented_aserve_flags() -> None:
    assert FLAG_FIELDS - set(TF_DEFAULTS) == ASERVE_FLAGS


def test_implemented_names_real_flags_and_all_aserve_flags() -> None:
    assert IMPLEMENTED <= FLAG_FIELDS
    assert ASERVE_FLAGS <= IMPLEMENTED
    assert set(TF_DEFAULTS) - IMPLEMENTED == NOT_IMPLEMENTED


def test_defaults(base: list[str], paths: dict[str, str]) -> None:
    options = parse(base)
    expected = {
        "port": 8500,
        "rest_api_port": 8501,
        "model_name": "model",
        "model_base_path": paths["dir"],
        "saved_model_tags": ("serve",),
        "grpc_channel_arguments": (),
        "enable_model_warmup": True,
        "enable_profiler": True,
        "flush_filesystem_caches": True,
        "load_retry_interval_micros": 60_000_000,
        "per_process_gpu_memory_fraction": 0.0,
        "rest_api_timeout_in_ms": 30000,
        "file_system_poll_wait_seconds": 1,
        "max_num_load_retries": 5,
        "host": "0.0.0.0",
        "rest_api_host": "0.0.0.0",
        "grpc_host": "0.0.0.0",
        "rest_api_max_body_bytes": 67_108_864,
        "num_worker_threads": 0,
        "device": "",
        "log_level": "info",
        "shutdown_grace_seconds": 30.0,
        "codec_offload_us": 200.0,
        "max_request_elements": 67_108_864,
        "max_queued_requests": 128,
        "rest_api_header_timeout_seconds": 10.0,
        "rest_api_keepalive_seconds": 75.0,
        "max_connections": 0,
        "max_request_bytes": 1_073_741_824,
        "listen_before_load": False,
        "drain_delay_seconds": 0.0,
        "access_log": "",
        "log_format": "text",
        "auth_token_file": "",
        "admin_token_file": "",
        "auth_metrics": False,
        "allowed_model_roots": (),
        "model_cache_dir": "",
        "custom_op_paths": (),
        "version": False,
        "ignored_flags": (),
    }
    assert {name: getattr(options, name) for name in expected} == expected


def test_constructor_defaults_match_parse_defaults(base: list[str], paths: dict[str, str]) -> None:
    assert parse(base) == ServerOptions(model_base_path=paths["dir"])


def test_tf_defaults_given_explicitly_change_nothing_but_ignored_flags(
    base: list[str], paths: dict[str, str]
) -> None:
    aserve_defaults = {"model_name": "model", "rest_api_port": "8501"}
    explicit = {**TF_DEFAULTS, **aserve_defaults, "model_base_path": paths["dir"]}
    options = parse([f"--{name}={value}" for name, value in explicit.items()])
    assert dataclasses.replace(options, ignored_flags=()) == parse(base)
    assert set(options.ignored_flags) == NOT_IMPLEMENTED


# --- syntax -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "field", "expected"),
    [
        ("--port=9000", "port", 9000),
        ("--port 9000", "port", 9000),
        ("-port=9000", "port", 9000),
        ("-port 9000", "port", 9000),
        ("--port=0 --grpc_socket_path=/tmp/s", "port", 0),
        ("--port=65535", "port", 65535),
        ("--rest_api_port=0", "rest_api_port", 0),
        ("--model_name=half", "model_name", "half"),
        ("--model_name half", "model_name", "half"),
        ("--model_name=a=b", "model_name", "a=b"),
        ("--model_name -x", "model_name", "-x"),
        ("--load_retry_interval_micros -1", "load_retry_interval_micros", -1),
        (
            "--load_retry_interval_micros=9223372036854775807",
            "load_retry_interval_micros",
            2**63 - 1,
        ),
        ("--file_system_poll_wait_seconds=-1", "file_system_poll_wait_seconds", -1),
        ("--port=1 --port=2", "port", 2),
        ("--saved_model_tags=serve,gpu", "saved_model_tags", ("serve", "gpu")),
        ("--saved_model_tags serve", "saved_model_tags", ("serve",)),
        ("--saved_model_tags=serve,,tpu, ", "saved_model_tags", ("serve", "tpu")),
        (
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x",
            "grpc_channel_arguments",
            (("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x")),
        ),
        (
            "--grpc_channel_arguments=k=99999999999",
            "grpc_channel_arguments",
            (("k", "99999999999"),),
        ),
        ("--per_process_gpu_memory_fraction=0.5", "per_process_gpu_memory_fraction", 0.5),
        ("--shutdown_grace_seconds 0", "shutdown_grace_seconds", 0.0),
        ("--log_level=DEBUG", "log_level", "debug"),
        ("--device=/device:GPU:0", "device", "/device:GPU:0"),
        ("--rest_api_max_body_bytes=1", "rest_api_max_body_bytes", 1),
        ("--num_worker_threads=3", "num_worker_threads", 3),
        ("--host=127.0.0.1", "grpc_host", "127.0.0.1"),
        ("--host=127.0.0.1 --rest_api_host=::1", "rest_api_host", "::1"),
        ("--host=127.0.0.1 --rest_api_host=::1", "grpc_host", "127.0.0.1"),
        (
            "--tensorflow_session_parallelism=2 --tensorflow_intra_op_parallelism=2",
            "tensorflow_intra_op_parallelism",
            2,
        ),
    ],
)
def test_values(
    words: str, field: str, expected: object, base: list[str], paths: dict[str, str]
) -> None:
    assert getattr(parse(base + render(words, paths)), field) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("--enable_batching", True),
        ("-enable_batching", True),
        ("--enable_batching=true", True),
        ("--enable_batching=True", True),
        ("--enable_batching=1", True),
        ("--enable_batching=false", False),
        ("--enable_batching=FALSE", False),
        ("--enable_batching=0", False),
        ("--enable_batching true", True),
        ("--enable_batching TRUE", True),
        ("--enable_batching 1", True),
        ("--enable_batching false", False),
        ("--enable_batching 0", False),
        ("--enable_batching --port=1", True),
        ("--enable_batching --enable_batching=false", False),
    ],
)
def test_bool_forms(words: str, expected: bool, base: list[str], paths: dict[str, str]) -> None:
    assert parse(base + render(words, paths)).enable_batching is expected


def test_bool_does_not_swallow_a_following_non_boolean_word(base: list[str]) -> None:
    with pytest.raises(UsageError, match=r"^unknown argument: yes$"):
        parse([*base, "--enable_batching", "yes"])


@pytest.mark.parametrize(
    "words",
    [
        "--config={file}",
        "--config {file}",
        "-config={file}",
        "--model_config_file={file}",
        "--model_config_file {file}",
    ],
)
def test_config_alias(words: str, paths: dict[str, str]) -> None:
    options = parse(render(words, paths))
    assert (options.model_config_file, options.ignored_flags) == (paths["file"], ())


def test_config_file_wins_over_bad_base_path(paths: dict[str, str]) -> None:
    options = parse(render("--config={file} --model_base_path={missing}", paths))
    assert options.model_config_file == paths["file"]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("", "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (
            "--model_name=x",
            "Both server_options.model_base_path and server_options.model_config_file are empty!",
        ),
        ("--model_base_path={missing}", "--model_base_path={missing} is not a directory"),
        ("--model_base_path={file}", "--model_base_path={file} is not a directory"),
        ("--model_config_file={missing}", "--model_config_file={missing} does not exist"),
        (
            "--config={missing} --model_base_path={dir}",
            "--model_config_file={missing} does not exist",
        ),
        ("--model_config_file={dir}", "--model_config_file={dir} is not a file"),
        (
            "--model_base_path={dir} --batching_parameters_file={file}",
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        ),
        (
            "--model_base_path={dir} --batching_parameters_file={file} --enable_batching=false",
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
        ),
        (
            "--model_base_path={dir} --port=0",
            "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.",
        ),
        (
            "--model_base_path={dir} --use_alts_credentials --ssl_config_file={file}",
            "Either use_alts_credentials must be false or ssl_config_file must be empty.",
        ),
        (
            "--model_base_path={dir} --tensorflow_session_parallelism=1 "
            "--tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=1",
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.",
        ),
        (
            "--model_base_path={dir} --drain_delay_seconds=30",
            "--drain_delay_seconds=30 must be shorter than --shutdown_grace_seconds=30",
        ),
        (
            "--model_base_path={dir} --rest_api_ssl_certfile={file}",
            "--rest_api_ssl_certfile and --rest_api_ssl_keyfile go together",
        ),
        (
            "--model_base_path={dir} --rest_api_ssl_ca_file={file}",
            "--rest_api_ssl_ca_file needs --rest_api_ssl_certfile",
        ),
        ("--model_base_path={dir} --auth_token_file={dir}", "{dir} (a token file) is not a file"),
        (
            "--model_base_path={dir} --allowed_model_roots={dir},{missing}",
            "--allowed_model_roots: {missing} is not a directory",
        ),
        (
            "--model_base_path={dir} --custom_op_paths={missing}",
            "--custom_op_paths: {missing} is not a file",
        ),
    ],
)
def test_flag_combination_errors(words: str, message: str, paths: dict[str, str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse(render(words, paths))
    assert str(caught.value) == message.format(**paths)


@pytest.mark.parametrize(
    "arg",
    [
        "--bogus",
        "--bogus=1",
        "-bogus",
        "positional",
        "--",
        "-",
        "---port=1",
        "--Port=1",
        "--model_name_x=1",
        "--mod=1",
        "--model-name=x",
        "-h=1",
        "--help=true",
    ],
)
def test_unknown_argument(arg: str, base: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse([*base, arg])
    assert str(caught.value) == f"unknown argument: {arg}"


@pytest.mark.parametrize(
    ("arg", "flag", "value"),
    [
        ("--port=abc", "port", "abc"),
        ("--port=70000", "port", "70000"),
        ("--port=-1", "port", "-1"),
        ("--port=", "port", ""),
        ("--port=1.5", "port", "1.5"),
        ("--port=0x10", "port", "0x10"),
        ("--port=1_000", "port", "1_000"),
        ("--rest_api_port=65536", "rest_api_port", "65536"),
        ("--rest_api_timeout_in_ms=2147483648", "rest_api_timeout_in_ms", "2147483648"),
        (
            "--load_retry_interval_micros=9223372036854775808",
            "load_retry_interval_micros",
            "9223372036854775808",
        ),
        ("--num_load_threads=-1", "num_load_threads", "-1"),
        ("--max_num_load_retries=-2", "max_num_load_retries", "-2"),
        ("--num_worker_threads=-1", "num_worker_threads", "-1"),
        ("--grpc_max_threads=0", "grpc_max_threads", "0"),
        ("--rest_api_max_body_bytes=0", "rest_api_max_body_bytes", "0"),
        ("--enable_batching=maybe", "enable_batching", "maybe"),
        ("--enable_batching=", "enable_batching", ""),
        ("--per_process_gpu_memory_fraction=-0.1", "per_process_gpu_memory_fraction", "-0.1"),
        ("--per_process_gpu_memory_fraction=nan", "per_process_gpu_memory_fraction", "nan"),
        ("--shutdown_grace_seconds=inf", "shutdown_grace_seconds", "inf"),
        ("--shutdown_grace_seconds=soon", "shutdown_grace_seconds", "soon"),
        ("--log_level=verbose", "log_level", "verbose"),
        ("--saved_model_tags=,", "saved_model_tags", ","),
        ("--grpc_channel_arguments=novalue", "grpc_channel_arguments", "novalue"),
        ("--grpc_channel_arguments==1", "grpc_channel_arguments", "=1"),
        ("--host=", "host", ""),
        ("--port=" + "9" * 5000, "port", "9" * 5000),
    ],
)
def test_malformed_value(arg: str, flag: str, value: str, base: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse([*base, arg])
    assert str(caught.value).startswith(f"invalid value for --{flag}: {value!r} (expected ")


@pytest.mark.parametrize(
    ("words", "flag"),
    [
        ("--port", "port"),
        ("--model_name", "model_name"),
        ("--model_name --port=1", "model_name"),
        ("--model_name -port=1", "model_name"),
        ("--model_name --bogus", "model_name"),
        ("--config", "model_config_file"),
    ],
)
def test_missing_value(words: str, flag: str, base: list[str], paths: dict[str, str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse(base + render(words, paths))
    assert str(caught.value) == f"--{flag} requires a value"


def test_usage_error_is_one_line() -> None:
    with pytest.raises(UsageError) as caught:
        parse(["--bogus\nTraceback"])
    assert "\n" not in str(caught.value)


def test_flag_combinations_checked_after_every_flag_is_read() -> None:
    with pytest.raises(UsageError, match=r"^unknown argument: --bogus$"):
        parse(["--port=0", "--bogus"])


# --- ignored flags, help, version ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "ignored"),
    [
        ("", ()),
        ("--port=1 --enable_batching --config={file} --host=::", ()),
        ("--enable_profiler=false --prefer_tflite_model", ()),
        ("--flush_filesystem_caches=false", ("flush_filesystem_caches",)),
        (
            "--xla_cpu_compilation_enabled --rest_api_num_threads=4 --port=1 "
            "--xla_cpu_compilation_enabled=false --mixed_precision bfloat16",
            ("xla_cpu_compilation_enabled", "rest_api_num_threads", "mixed_precision"),
        ),
    ],
)
def test_ignored_flags(
    words: str, ignored: tuple[str, ...], base: list[str], paths: dict[str, str]
) -> None:
    assert parse(base + render(words, paths)).ignored_flags == ignored


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["-help"],
        ["--port=abc", "--help"],
        ["--model_name", "-h"],
    ],
)
def test_help_is_requested_not_printed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HelpRequested):
        parse(argv)
    assert capsys.readouterr() == ("", "")


def test_version_skips_flag_combination_checks() -> None:
    assert parse(["--version"]).version is True


def test_parse_or_exit_returns_options(base: list[str]) -> None:
    assert flags.parse_or_exit(base) == parse(base)


@pytest.mark.parametrize(
    ("argv", "code", "stdout_start", "stderr"),
    [
        (["--bogus"], 2, "", "aserve: error: unknown argument: --bogus\n"),
        (
            ["--port=abc"],
            2,
            "",
            "aserve: error: invalid value for --port: 'abc' (expected an integer in 0..65535)\n",
        ),
        (
            [],
            2,
            "",
            "aserve: error: Both server_options.model_base_path and "
            "server_options.model_config_file are empty!\n",
        ),
        (["--help"], 0, "usage: aserve", ""),
        (["--version"], 0, "TensorFlow ModelServer: aserve ", ""),
    ],
)
def test_parse_or_exit(
    argv: list[str], code: int, stdout_start: str, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        flags.parse_or_exit(argv)
    out, err = capsys.readouterr()
    assert (caught.value.code, err) == (code, stderr)
    assert out.startswith(stdout_start) and (out == "") == (stdout_start == "")


def test_version_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        flags.parse_or_exit(["--version"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("TensorFlow ModelServer: aserve ")
    assert lines[1].startswith("TensorFlow Library: ")
    assert lines[1] != "TensorFlow Library: "


def help_rows(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """--help as {flag name: its two-line entry}."""
    with pytest.raises(SystemExit):
        flags.parse_or_exit(["--help"])
    lines = capsys.readouterr().out.splitlines()
    return {
        line.split()[0].lstrip("-").split("=")[0].split("[")[0]: line + "\n" + lines[i + 1]
        for i, line in enumerate(lines)
        if line.startswith("  --")
    }


def test_help_marks_exactly_the_unimplemented_flags(capsys: pytest.CaptureFixture[str]) -> None:
    rows = help_rows(capsys)
    marked = {name for name, row in rows.items() if "no effect yet" in row}
    assert marked == NOT_IMPLEMENTED


def test_help_shows_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    rows = help_rows(capsys)
    assert set(rows) >= FLAG_FIELDS
    assert all("(default: " in rows[name] for name in FLAG_FIELDS)
    assert "(default: 8501)" in rows["rest_api_port"] and "(default: model)" in rows["model_name"]


# --- python -m aserve ---------------------------------------------------------------------------


def run_aserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aserve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_help_is_complete() -> None:
    done = run_aserve("--help")
    assert (done.returncode, done.stderr) == (0, "")
    missing = [name for name in TF_DEFAULTS if f"--{name}" not in done.stdout]
    assert missing == []


def test_cli_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from aserve import __main__ as m\n"
        "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('tensorflow', 'grpc', 'numpy', 'starlette', 'hypercorn', 'google.protobuf')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in heavy or n in heavy),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr == "[]\n"


def test_cli_unknown_flag() -> None:
    done = run_aserve("--bogus")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == ["aserve: error: unknown argument: --bogus"]
    assert "Traceback" not in done.stderr
