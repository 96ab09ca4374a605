"""End-to-end: /metrics and /readyz of a real server after a real stream, and `serve --config`.

Slow: each test starts (or reuses) a `palabre serve` subprocess with Whisper tiny.en.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from palabre_client import stream_file
from tests.conftest import PalabreServer

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: PalabreServer) -> Samples:
    """GET /metrics, parsed with prometheus_client's parser."""
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def readyz(server: PalabreServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(server.http + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_metrics_after_a_real_stream(
    palabre_server: Callable[..., PalabreServer], speech_dir: Path, speech_manifest: dict[str, Any]
) -> None:
    server = palabre_server("tiny.en")
    status, ready = readyz(server)
    assert status == 200, ready
    assert all(entry["up"] for entry in ready["services"].values() if entry["required"])

    before = scrape(server)
    name = "en_speaker_a.wav"
    events = await stream_file(server.url, speech_dir / name, speed=2.0)
    after = scrape(server)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    finals = [e for e in events if e["type"] == "final"]
    assert finals and any(f["text"].strip() for f in finals)
    assert delta("palabre_sessions_started_total") >= 1
    assert delta("palabre_utterances_total") >= len(finals)
    latencies = delta("palabre_final_latency_seconds_count")
    assert latencies > 0
    assert delta("palabre_scheduler_batch_size_count", model="asr") > 0
    assert delta("palabre_scheduler_batch_size_sum", model="asr") >= delta(
        "palabre_scheduler_batch_size_count", model="asr"
    )
    assert delta("palabre_model_compute_seconds_total", model="asr") > 0
    assert delta("palabre_store_write_seconds_count", op="add_utterance") >= 1
    duration = speech_manifest["files"][name]["duration"]
    assert delta("palabre_audio_seconds_total") == pytest.approx(duration, abs=0.2)
    mean = delta("palabre_final_latency_seconds_sum") / latencies
    rtf = delta("palabre_model_compute_seconds_total", model="asr") / delta(
        "palabre_model_audio_seconds_total", model="asr"
    )
    print(f"\n{name} at 2x: {len(finals)} finals, mean final latency {mean:.3f} s, ASR RTF {rtf:.3f}")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "palabre.toml"
    path.write_text(
        'memory = false\nlog_level = "DEBUG"\n\n[scheduler]\nmax_batch = 4\n\n[gpu_budget]\nasr = 1.0\n'
    )
    return path


def test_serve_with_a_config_file(palabre_server: Callable[..., PalabreServer], config_file: Path) -> None:
    server = palabre_server("tiny.en", "--config", str(config_file))
    status, ready = readyz(server)
    assert status == 200, ready
    # memory = false came from the file: the embedder, index and LLM are not required.
    assert ready["services"]["embedder"] == {"up": False, "required": False, "detail": "not configured"}
    samples = scrape(server)
    assert value(samples, "palabre_gpu_budget_bytes", service="asr") == 2**30
    assert ("palabre_scheduler_queue_depth", frozenset({("model", "embed")})) not in samples
