"""The server's configuration: one typed object, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stream.scheduler import SchedulerConfig
from stream.session import SessionConfig


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Per-connection and per-process limits."""

    max_sessions: int = 64
    max_text_bytes: int = 65_536
    max_frame_bytes: int = 1 << 20
    outbox_events: int = 256


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `palabre serve` needs."""

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    asr_workers: int = 0
    """Concurrent engine calls; 0 picks 2 on CPU (one thread each, measured faster) and 1 on GPU."""
    cpu_threads: int = 0
    """Threads per engine call; 0 picks (cores / workers)."""
    asr_fallback: Literal["auto", "cpu", "off"] = "auto"
    """A CPU engine that takes over when the GPU engine fails (auto: when the ASR runs on a GPU)."""
    inject_asr_fault_after: int | None = None
    """Chaos testing: the primary ASR engine fails like a lost GPU after this many batches."""
    scheduler_mode: Literal["batched", "sequential"] = "batched"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    memory: bool = True
    """Conversation memory: embeddings, index, answers and summaries (off: transcription only)."""
    embedder: str = "minilm"
    llm: str = "gemma3-270m"
    """An LLM name, a .gguf path, an ExLlamaV2 model directory, or "none"."""
    tenant: str = "default"
    log_level: str = "INFO"
    audiosocket_port: int | None = None
    """TCP port for Asterisk AudioSocket calls (on `host`); None: no AudioSocket listener."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "palabre.db"
