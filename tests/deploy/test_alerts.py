"""deploy/: the Prometheus alert rules (promtool check and unit tests) and the Grafana dashboard.

The promtool tests need `promtool` (Debian's `prometheus` package; `./dev test` installs it): they
skip without it, but fail under CI.
The others check that rules and panels only use metrics the server exposes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from server.config import ServerConfig
from server.metrics import Metrics
from stream.scheduler import SchedulerStats
from tests.requirements import require_tool

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "palabre.json"
METRIC_NAME = re.compile(r"\bpalabre_[a-z_]+\b")



def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (skips locally, fails under CI, without it)."""
    command = [require_tool("promtool"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_rules_unit_tests() -> None:
    """Latency, GPU memory, temperature, idle GPU and error rate fire as planned (alerts_test.yml)."""
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def test_rules_hold_the_planned_thresholds() -> None:
    by_name = rules()
    assert "22 / 24" in by_name["PalabreGpuMemoryHigh"]["expr"]
    assert "> 83" in by_name["PalabreGpuHot"]["expr"]
    assert "< 0.20" in by_name["PalabreGpuIdleWithSessions"]["expr"]
    assert "palabre_sessions" in by_name["PalabreGpuIdleWithSessions"]["expr"]
    latency = by_name["PalabreFinalLatencyHigh"]["expr"]
    assert "histogram_quantile(0.95" in latency and "> 0.5" in latency
    assert "palabre_errors_total" in by_name["PalabreErrorRateHigh"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]


def exposed_names() -> set[str]:
    """Every sample name the server can expose (with fake services and a fake GPU)."""

    class Nvml:
        NVML_TEMPERATURE_GPU = 0

        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
            return index

        def nvmlDeviceGetName(self, handle: int) -> str:
            return "GPU"

        def nvmlDeviceGetUUID(self, handle: int) -> str:
            return "GPU-0"

        def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
            return SimpleNamespace(total=1, used=1)

        def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
            return SimpleNamespace(gpu=50)

        def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
            return 60

        def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
            return 1000

    def model(name: str) -> SimpleNamespace:
        return SimpleNamespace(
            name=name, on_batch=None, scheduler=SimpleNamespace(pending=0, stats=SchedulerStats())
        )

    knowledge = SimpleNamespace(
        embed=model("embed"), llm=SimpleNamespace(pending=0), index_sizes=lambda: {"default": 1}
    )
    asr = SimpleNamespace(lanes=[SimpleNamespace(service=model("asr"))])
    services = SimpleNamespace(asr=asr, knowledge=knowledge)
    app = SimpleNamespace(config=ServerConfig(), services=services, active_sessions=lambda: 0)
    metrics = Metrics(app, nvml_opener=Nvml)  # type: ignore[arg-type]
    metrics.batch_recorder("asr")
    metrics.batch_recorder("embed")
    metrics.store_write_done("add_utterance", 0.001)
    text = metrics.exposition().decode()
    return set(re.findall(r"^(palabre_[a-z_]+)", text, flags=re.MULTILINE))


def test_rules_and_tests_use_exposed_metrics() -> None:
    names = exposed_names()
    for path in (ALERTS, ALERT_TESTS):
        used = set(METRIC_NAME.findall(path.read_text()))
        assert used, path
        assert used <= names, f"{path.name} uses metrics the server does not expose: {sorted(used - names)}"


def test_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "palabre"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    graphs = [p for p in panels if p["type"] != "row"]
    titles = " ".join(p["title"] for p in graphs).lower()
    for topic in ("sessions", "latency", "batch size", "queue wait", "rtf", "gpu utilisation", "gpu memory"):
        assert topic in titles, topic
    exprs = [t["expr"] for p in graphs for t in p["targets"]]
    assert all(p["targets"] for p in graphs)
    assert any("histogram_quantile(0.95" in e and "palabre_final_latency_seconds_bucket" in e for e in exprs)
    assert any("histogram_quantile(0.5" in e and "palabre_final_latency_seconds_bucket" in e for e in exprs)
    used = set(METRIC_NAME.findall(" ".join(exprs)))
    names = exposed_names()
    assert used <= names, f"the dashboard uses metrics the server does not expose: {sorted(used - names)}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
