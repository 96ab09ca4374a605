"""Configuration: the TOML file, the environment, flags, precedence, errors and the GPU budget."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from server import cli, gpu
from server.config import GpuBudget, ServerConfig, parse_retention_days
from server.gpu import GpuInfo
from server.settings import (
    CHECKS,
    ENV_KEYS,
    GIB,
    HIDDEN,
    KEYS,
    ConfigError,
    check_budget,
    cuda_device,
    format_config,
    load_config,
    resolve,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "palabre.example.toml"

GOOD = """
port = 9000
model = "base"
device = "cpu"
scheduler_mode = "sequential"
memory = false
allowed_origins = ["https://app.example.com"]

[scheduler]
max_batch = 16
max_wait_s = 0.02

[session]
partials = false

[session.segmenter]
pad_ms = 250
min_silence_ms = 500

[limits]
max_sessions = 8

[gpu_budget]
asr = 3.5
llm = 5
"""


def write(tmp_path: Path, text: str, name: str = "palabre.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path | None = None, env: dict[str, str] | None = None, **overrides: object) -> str:
    """The ConfigError text for a configuration that must be refused."""
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {}, overrides)
    return str(info.value)


def gpu_of(gib: float, index: int = 0, used_gib: float = 0.5) -> GpuInfo:
    return GpuInfo(index, f"Fake {gib:g} GB", f"GPU-fake-{index}", int(gib * GIB), int(used_gib * GIB))


# --- the file ------------------------------------------------------------------------------------


def test_defaults_without_file() -> None:
    assert load_config(None, {}, {}) == ServerConfig()


def test_good_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), {}, {})
    assert config.port == 9000
    assert config.model == "base"
    assert config.scheduler_mode == "sequential"
    assert config.memory is False
    assert config.allowed_origins == ("https://app.example.com",)
    assert config.scheduler.max_batch == 16
    assert config.scheduler.max_wait_s == 0.02
    assert config.session.partials is False
    assert config.session.segmenter.pad_ms == 250
    assert config.session.segmenter.min_silence_ms == 500
    assert config.session.segmenter.threshold == 0.5  # untouched keys keep their defaults
    assert config.limits.max_sessions == 8
    assert config.gpu_budget == GpuBudget(asr=3.5, llm=5.0)
    assert isinstance(config.gpu_budget.llm, float)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, "[scheduler]\nmax_bach = 4\n"))
    assert "unknown key scheduler.max_bach" in text
    assert "did you mean scheduler.max_batch?" in text


def test_unknown_table_and_top_level_key(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, 'colour = "blue"\n[database]\nurl = "x"\n'))
    assert "unknown key colour" in text
    assert "unknown table [database]" in text
    assert "unknown table [limit] (did you mean limits?)" in problems_of(write(tmp_path, "[limit]\nx = 1\n"))


def test_hidden_field_points_to_its_key(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, "[scheduler]\nsequential = true\n"))
    assert 'scheduler_mode = "sequential"' in text


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('port = "9000"', "port: expected an integer, got '9000'"),
        ("port = 9000.5", "port: expected an integer, got 9000.5 (number)"),
        ("memory = 1", "memory: expected true or false, got 1 (integer)"),
        ('scheduler_mode = "fast"', 'scheduler_mode: expected one of "batched", "sequential"'),
        ("allowed_origins = [1, 2]", "allowed_origins: expected a list of strings"),
        ("[scheduler]\nmax_wait_s = true", "scheduler.max_wait_s: expected a number, got True (boolean)"),
        ("scheduler = 3", "scheduler: expected a table [scheduler]"),
        ("[limits.max_sessions]\nx = 1", "limits.max_sessions: expected an integer, got a table"),
    ],
)
def test_wrong_type_names_key_source_and_reason(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml + "\n")
    text = problems_of(path)
    assert f"{path}: {expected}" in text


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("port = 70000", "port = 70000: must be a TCP port"),
        ("[scheduler]\nmax_batch = 0", "scheduler.max_batch = 0: must be at least 1"),
        ("[gpu_budget]\nllm = -1.0", "gpu_budget.llm = -1.0: must not be negative"),
        ('log_level = "LOUD"', 'log_level = "LOUD": must be one of DEBUG'),
    ],
)
def test_out_of_range_values(tmp_path: Path, toml: str, expected: str) -> None:
    assert expected in problems_of(write(tmp_path, toml + "\n"))


def test_config_class_checks_are_reported_by_table(tmp_path: Path) -> None:
    text = problems_of(write(tmp_path, "[session.segmenter]\nthreshold = 0.2\nneg_threshold = 0.3\n"))
    assert "[session.segmenter]: need 0 < neg_threshold <= threshold < 1" in text
    assert "session.segmenter.threshold from" in text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "x"\nbogus = 1\n[limits]\nmax_sessions = 0\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert len(info.value.problems) == 3


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    assert "cannot read the file" in problems_of(tmp_path / "missing.toml")
    assert "not valid TOML" in problems_of(write(tmp_path, "port = \n"))


# --- environment and flags -----------------------------------------------------------------------


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nhost = "127.0.0.2"\n[scheduler]\nmax_batch = 16\n')
    env = {"PALABRE_PORT": "9100", "PALABRE_SCHEDULER_MAX_BATCH": "4"}
    resolved = resolve(path, env, {"port": 9200})
    config = resolved.config
    assert config.port == 9200  # flag
    assert config.scheduler.max_batch == 4  # environment over file
    assert config.host == "127.0.0.2"  # file over default
    assert config.model is None  # default: asr_models
    assert resolved.sources["port"] == "command line"
    assert resolved.sources["scheduler.max_batch"] == "environment PALABRE_SCHEDULER_MAX_BATCH"
    assert resolved.sources["host"] == str(path)
    assert resolved.sources["model"] == "default"
    assert load_config(path, env, {}).port == 9100


def test_env_values_are_parsed_by_type() -> None:
    env = {
        "PALABRE_MEMORY": "off",
        "PALABRE_SESSION_SEGMENTER_PAD_MS": "250",
        "PALABRE_SCHEDULER_MAX_WAIT_S": "0.03",
        "PALABRE_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "PALABRE_AUDIOSOCKET_PORT": "9092",
        "PALABRE_DATA_DIR": "/srv/palabre",
        "PALABRE_SESSION_TURN_DETECTION": "manual",
    }
    config = load_config(None, env, {})
    assert config.memory is False
    assert config.session.segmenter.pad_ms == 250
    assert config.scheduler.max_wait_s == 0.03
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.audiosocket_port == 9092
    assert config.data_dir == Path("/srv/palabre")
    assert config.session.turn_detection == "manual"
    assert load_config(None, {"PALABRE_AUDIOSOCKET_PORT": "none"}, {}).audiosocket_port is None


def test_bad_env_value_names_the_variable() -> None:
    text = problems_of(None, {"PALABRE_SCHEDULER_MAX_BATCH": "eight"})
    assert (
        "environment PALABRE_SCHEDULER_MAX_BATCH: scheduler.max_batch: expected an integer, got 'eight'"
        in text
    )
    assert "expected true or false" in problems_of(None, {"PALABRE_MEMORY": "maybe"})


def test_other_palabre_variables_are_ignored() -> None:
    resolved = resolve(None, {"PALABRE_URL": "ws://x", "PALABRE_TOKEN": "t", "HOME": "/root"}, {})
    assert resolved.config == ServerConfig()
    assert resolved.ignored_env == ("PALABRE_TOKEN", "PALABRE_URL")


def test_unknown_override_is_an_error() -> None:
    assert "command line: unknown key scheduler.max_bach" in problems_of(
        None, None, **{"scheduler.max_bach": 3}
    )


def test_cli_flags_and_set(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--port",
            "9300",
            "--no-memory",
            "--scheduler",
            "sequential",
            "--set",
            "session.segmenter.pad_ms=300",
        ]
    )
    overrides = cli.config_overrides(args)
    assert overrides == {
        "port": 9300,
        "memory": False,
        "scheduler_mode": "sequential",
        "session.segmenter.pad_ms": "300",
    }
    config = load_config(write(tmp_path, "port = 9000\nmemory = true\n"), {"PALABRE_PORT": "9100"}, overrides)
    assert (config.port, config.memory, config.scheduler_mode) == (9300, False, "sequential")
    assert config.session.segmenter.pad_ms == 300
    bad = cli.build_parser().parse_args(["serve", "--set", "pad_ms"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        cli.config_overrides(bad)


# --- the schema ----------------------------------------------------------------------------------


def test_schema_is_consistent() -> None:
    assert len(ENV_KEYS) == len(KEYS)
    assert set(CHECKS) <= set(KEYS)
    assert not set(HIDDEN) & set(KEYS)
    assert KEYS["session.segmenter.pad_ms"].env == "PALABRE_SESSION_SEGMENTER_PAD_MS"
    assert KEYS["port"].env == "PALABRE_PORT"


def test_example_file_is_valid_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, {}, {})
    assert config.gpu_budget.total == pytest.approx(18.0)
    # Optional keys appear as `# key = value` lines: uncommented, the file must still load and
    # then hold every key.
    text = re.sub(r"^# (\w+ = )", r"\1", EXAMPLE.read_text(), flags=re.MULTILINE)
    document = tomllib.loads(text)
    for key in KEYS.values():
        node = document
        for part in key.path:
            assert part in node, f"deploy/palabre.example.toml does not mention {key.name}"
            node = node[part]


def test_format_config_loads_back(tmp_path: Path) -> None:
    resolved = resolve(write(tmp_path, GOOD), {"PALABRE_LOG_LEVEL": "DEBUG"}, {"cpu_threads": 3})
    text = format_config(resolved)
    assert 'log_level = "DEBUG"  # environment PALABRE_LOG_LEVEL' in text
    assert "cpu_threads = 3  # command line" in text
    assert load_config(write(tmp_path, text, "effective.toml"), {}, {}) == resolved.config


def test_format_config_hides_secrets() -> None:
    resolved = resolve(None, {"PALABRE_AUDIOSOCKET_TOKEN": "plb_secret"}, {})
    text = format_config(resolved)
    assert "plb_secret" not in text
    assert "# audiosocket_token = (set, hidden)" in text


# --- GPU budget ----------------------------------------------------------------------------------


def budget_config(total_over: float = 0.0, device: str = "auto") -> ServerConfig:
    """The example's 18 GiB budget, plus `total_over` GiB of buffer."""
    return ServerConfig(
        device=device,
        gpu_budget=GpuBudget(
            asr=3.5, llm=5.0, embedder=2.5, ner=1.0, index=2.0, overhead=2.0, buffer=2.0 + total_over
        ),
    )


def test_budget_fits_a_24_gb_card() -> None:
    check = check_budget(budget_config(), [gpu_of(24)])
    assert check.fits
    assert "18.0 GiB" in check.message and "6.0 GiB unplanned" in check.message


def test_budget_too_big_for_a_24_gb_card() -> None:
    check = check_budget(budget_config(total_over=8.0), [gpu_of(24)])
    assert not check.fits
    assert "26.0 GiB" in check.message and "does not fit GPU 0 (Fake 24 GB, 24.0 GiB)" in check.message


def test_budget_not_checked_without_gpu_budget_or_on_cpu() -> None:
    big = budget_config(total_over=100.0)
    assert check_budget(big, []).fits
    assert "no GPU detected" in check_budget(big, []).message
    assert check_budget(big, [gpu_of(24)]).fits is False
    assert check_budget(budget_config(total_over=100.0, device="cpu"), [gpu_of(24)]).fits
    assert check_budget(ServerConfig(), [gpu_of(8)]).fits


def test_budget_reports_memory_used_by_others() -> None:
    check = check_budget(budget_config(), [gpu_of(24, used_gib=10)])
    assert check.fits and "10.0 GiB are in use" in check.message


def test_cuda_visible_devices_chooses_the_gpu() -> None:
    gpus = [gpu_of(24, 0), gpu_of(80, 1)]
    assert cuda_device(gpus, {}) == gpus[0]
    assert cuda_device(gpus, {"CUDA_VISIBLE_DEVICES": "1,0"}) == gpus[1]
    assert cuda_device(gpus, {"CUDA_VISIBLE_DEVICES": "GPU-fake-1"}) == gpus[1]
    assert cuda_device(gpus, {"CUDA_VISIBLE_DEVICES": ""}) is None
    big = budget_config(total_over=30.0)  # 48 GiB
    assert not check_budget(big, gpus, {}).fits
    assert check_budget(big, gpus, {"CUDA_VISIBLE_DEVICES": "1"}).fits


# --- the commands --------------------------------------------------------------------------------


def test_config_check_prints_effective_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu, "detect_gpus", lambda: [gpu_of(24)])
    rc = cli.main(["config", "check", str(EXAMPLE)], env={"PALABRE_PORT": "9001"})
    out = capsys.readouterr().out
    assert rc == 0
    assert "port = 9001  # environment PALABRE_PORT" in out
    assert "GPU 0: Fake 24 GB, 24.0 GiB" in out
    assert "fits GPU 0" in out
    tomllib.loads(out)  # the whole output is TOML (the report lines are comments)


def test_config_check_refuses_a_budget_too_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu, "detect_gpus", lambda: [gpu_of(24)])
    rc = cli.main(["config", "check", str(EXAMPLE), "--set", "gpu_budget.buffer=10"], env={})
    assert rc == 2
    assert "does not fit GPU 0" in capsys.readouterr().err


def test_config_check_without_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu, "detect_gpus", lambda: [])
    assert cli.main(["config", "check", str(EXAMPLE)], env={}) == 0
    assert "no GPU detected" in capsys.readouterr().out


def test_config_check_reports_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["config", "check", str(write(tmp_path, "[limits]\nmax_sesions = 3\n"))], env={})
    assert rc == 2
    assert "unknown key limits.max_sesions (did you mean limits.max_sessions?)" in capsys.readouterr().err


def test_serve_refuses_a_budget_that_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu, "detect_gpus", lambda: [gpu_of(24)])
    path = write(tmp_path, "[gpu_budget]\nasr = 10.0\nllm = 16.0\n")
    rc = cli.main(["serve", "--config", str(path), "--data-dir", str(tmp_path / "data")], env={})
    assert rc == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "26.0 GiB" in err
    assert not (tmp_path / "data").exists()


def test_serve_refuses_an_invalid_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve"], env={"PALABRE_PORT": "http"}) == 2
    assert "PALABRE_PORT" in capsys.readouterr().err


# --- NVML ----------------------------------------------------------------------------------------


def test_open_nvml_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynvml missing, or its nvmlInit failing (no driver): no GPU, no exception."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu.open_nvml() is None
    failing = types.ModuleType("pynvml")

    def init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    failing.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", failing)
    assert gpu.open_nvml() is None
    assert gpu.read_gpus(None) == []


def test_retention_days_per_tenant_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "palabre.toml"
    path.write_text('retention_days = ["acme=30", "globex = 365", "keep=0"]\n')
    config = load_config(path, env={})
    assert parse_retention_days(config.retention_days) == {"acme": 30, "globex": 365}
    assert load_config(None, env={"PALABRE_RETENTION_DAYS": "acme=7"}).retention_days == ("acme=7",)
    for bad in ('["acme"]', '["acme=-1"]', '["acme=1.5"]', '["=3"]', '["acme=1", "acme=2"]'):
        path.write_text(f"retention_days = {bad}\n")
        with pytest.raises(ConfigError, match=r"retention_days.*TENANT=DAYS"):
            load_config(path, env={})
