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
    max_sessions_per_tenant: int = 32
    """Live sessions one tenant may hold at once, every transport counted (with `auth`: open
    access has a single tenant, which `max_sessions` limits; 0: no cap of its own)."""
    max_text_bytes: int = 65_536
    max_frame_bytes: int = 1 << 20
    outbox_events: int = 256
    audio_rate: float = 16.0
    """Seconds of audio one connection (any transport) may send per second, sustained (0: no limit)."""
    audio_burst_s: float = 10.0
    """Seconds of audio a connection may send ahead of `audio_rate` (the token bucket's size)."""
    audio_rate_policy: Literal["refuse", "pace"] = "refuse"
    """What a connection sending audio faster than `audio_rate` gets: `refuse` closes it with
    `rate_limited`; `pace` stops reading from it until it is back within the rate (TCP pushes
    back on the sender). SIP/RTP audio (UDP, nothing to push back on) is always refused."""
    message_rate: float = 1000.0
    """Messages (text and binary) one WebSocket connection may send per second (0: no limit)."""
    message_burst: int = 1000
    """Messages a connection may send ahead of `message_rate`."""
    idle_timeout_s: float = 120.0
    """A connection (WebSocket or AudioSocket) that sends nothing for this long is closed (0: never)."""
    store_hold_s: float = 30.0
    """How long a session holds a final it cannot commit (the database is lost) while retrying,
    before it is told `unavailable` and closed (server/final_hold.py)."""
    store_hold_finals: int = 32
    """How many finals a session holds while the database is lost before it is told and closed."""


@dataclass(frozen=True, slots=True)
class GpuBudget:
    """Planned GPU memory per service, in GiB (2**30 bytes, what nvidia-smi calls MiB x 1024).

    All zero (the default) declares no budget. `palabre serve` refuses to start when the sum does
    not fit the GPU it will use (see `server.settings.check_budget`).
    """

    asr: float = 0.0
    llm: float = 0.0
    embedder: float = 0.0
    ner: float = 0.0
    index: float = 0.0
    overhead: float = 0.0
    """CUDA contexts, allocator caches, the process itself."""
    buffer: float = 0.0
    """Head room kept free for peaks (long utterances, large batches)."""

    @property
    def total(self) -> float:
        """The sum of every entry, in GiB."""
        return self.asr + self.llm + self.embedder + self.ner + self.index + self.overhead + self.buffer


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `palabre serve` needs."""

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    store: str | None = None
    """Where conversations are stored: None for SQLite in `data_dir` (one front-end), or a
    PostgreSQL server shared by several front-ends, `postgresql://USER:PASSWORD@HOST:PORT/DB`."""
    model: str | None = None
    """One Whisper model for every language (`tiny.en`, `base`, a CTranslate2 Whisper directory);
    None: a model per language group, from `asr_models`."""
    asr_models: tuple[str, ...] = ("en=tiny.en", "*=base")
    """Without `model`: `LANGUAGE=MODEL` entries, `*` for every language not named. Each distinct
    model is loaded at start with its own micro-batcher (an ASR lane); a session's requests go to
    the lane of its language, and `auto` sessions to the lane of `*` (which detects the language of
    each utterance)."""
    asr_auto_languages: tuple[str, ...] = ("en", "fr")
    """The languages `auto` sessions are detected among: each utterance is decoded in the most
    probable of these (Whisper alone takes French speech on `base` for Hebrew or Spanish); empty:
    any language Whisper knows."""
    vocabulary: tuple[str, ...] = ()
    """Names and terms every session gives the recogniser, after its own (`start.vocabulary`) and
    its tenant's (`PUT /v1/vocabulary`); at most 100 terms, 1 KB."""
    device: str = "auto"
    compute_type: str = "auto"
    asr_workers: int = 0
    """Concurrent engine calls; 0 picks 2 on CPU (one thread each, measured faster) and 1 on GPU."""
    cpu_threads: int = 0
    """Threads per engine call; 0 picks (cores / workers)."""
    asr_fallback: Literal["auto", "cpu", "off"] = "auto"
    """A CPU engine that takes over when the GPU engine fails (auto: when the ASR runs on a GPU)."""
    inject_asr_fault_after: int | None = None
    """Tests only: the primary ASR engine fails like a lost GPU after this many batches (the registry
    wraps it in the test seam `models.fault_injection.FaultyAsr`); None, the default, for serving."""
    scheduler_mode: Literal["batched", "sequential"] = "batched"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    memory: bool = True
    """Conversation memory: embeddings, index, answers and summaries (off: transcription only)."""
    entities: bool = True
    """Named entities of every utterance (spaCy), stored and usable as search filters."""
    embedder: str = "minilm"
    speaker_model: str = "resemblyzer"
    """The speaker encoder of diarized sessions (`start.diarize`), or "none" to refuse them."""
    llm: str = "gemma3-270m"
    """An LLM name, a .gguf path, an ExLlamaV2 model directory, or "none"."""
    tenant: str = "default"
    retention_days: tuple[str, ...] = ()
    """TENANT=DAYS entries (`["acme=30", "globex=365"]`): keep each named tenant's conversations
    DAYS days after their last utterance (0: for ever). A tenant's own setting in the store
    (`palabre tenant set T --retention-days N`) takes precedence over its entry here."""
    log_level: str = "INFO"
    audiosocket_port: int | None = None
    """TCP port for Asterisk AudioSocket calls (on `host`); None: no AudioSocket listener."""
    gpu_budget: GpuBudget = field(default_factory=GpuBudget)
    auth: bool = False
    """Require an API token (`palabre token create`) on every endpoint but /healthz."""
    auth_cache_s: float = 5.0
    """How long a token lookup is cached: a revoked token stops working within this time."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (`https://app.example.com`) a browser may open WebSockets from; empty: any."""
    audiosocket_token: str | None = None
    """With `auth`: the token AudioSocket calls run under (AudioSocket carries no credentials)."""
    sip_port: int | None = None
    """UDP port for SIP calls (on `host`); None: no SIP listener."""
    sip_rtp_ports: str = "20000-20999"
    """UDP ports (LOW-HIGH, on `host`) for the RTP audio of SIP calls: one even port per call."""
    sip_token: str | None = None
    """With `auth`: the token SIP calls run under (SIP calls carry no Palabre credentials)."""
    telephony_diarize: bool = False
    """Tell apart the speakers of telephony calls (both parties on one channel): the default of
    AudioSocket and SIP calls and of each Twilio track; a Twilio `<Parameter name="diarize">` or a
    SIP `X-Diarize` header decides per call."""
    ray_address: str | None = None
    """Run the model services as shared Ray actors (server/ray_services.py): a cluster address
    (`HEAD:6379`), "auto" (the running local cluster or RAY_ADDRESS) or "local" (start Ray in this
    process with this machine's CPUs); None: models run in this process."""
    ray_asr_gpus: float = 0.0
    """With `ray_address`: the GPU fraction the ASR actor reserves (Whisper on a 24 GB card: 0.15)."""
    ray_embed_gpus: float = 0.0
    """With `ray_address`: the GPU fraction the embedding actor reserves (on a 24 GB card: 0.1)."""

    def __post_init__(self) -> None:
        if self.telephony_diarize and self.speaker_model == "none":
            raise ValueError("telephony_diarize (--telephony-diarize) needs a speaker_model, not 'none'")
        if self.ray_address is not None and self.model is None:
            raise ValueError(
                "with ray_address (--ray) the ASR actor serves one model for every language: "
                "set model (--model base for every language, --model tiny.en for English only)"
            )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "palabre.db"

    def language_models(self) -> dict[str, str]:
        """Language (or `ANY_LANGUAGE`) → model name: `model` for every language when it is set,
        else the entries of `asr_models`."""
        if self.model is not None:
            return {ANY_LANGUAGE: self.model}
        return parse_language_models(self.asr_models)


ANY_LANGUAGE = "*"
"""In `asr_models`: every language no other entry names."""


def parse_language_models(entries: tuple[str, ...]) -> dict[str, str]:
    """`("en=tiny.en", "*=base")` → `{"en": "tiny.en", "*": "base"}`; ValueError naming the bad
    entry unless each is LANGUAGE=MODEL (a 2-3 letter code or `*`), each language named once."""
    models: dict[str, str] = {}
    for entry in entries:
        language, equals, model = (part.strip() for part in entry.partition("="))
        language = language.lower()
        code = language == ANY_LANGUAGE or (
            2 <= len(language) <= 3 and language.isascii() and language.isalpha()
        )
        if not (equals and model and code):
            raise ValueError(f"expected LANGUAGE=MODEL (a 2-3 letter code or *), e.g. fr=base, not {entry!r}")
        if language in models:
            raise ValueError(f"language {language!r} is named twice")
        models[language] = model
    if not models:
        raise ValueError("name at least one model, e.g. *=base")
    return models


def parse_retention_days(entries: tuple[str, ...]) -> dict[str, int]:
    """`("acme=30", "globex=0")` → `{"acme": 30}` (0: for ever, left out); ValueError naming the
    bad entry unless each is TENANT=DAYS, DAYS a whole number of days, each tenant named once."""
    days_of: dict[str, int] = {}
    for entry in entries:
        tenant, equals, days = (part.strip() for part in entry.rpartition("="))
        if not (equals and tenant and days.isascii() and days.isdigit()):
            raise ValueError(f"expected TENANT=DAYS (whole days, 0: for ever), e.g. acme=30, not {entry!r}")
        if tenant in days_of:
            raise ValueError(f"tenant {tenant!r} is named twice")
        days_of[tenant] = int(days)
    return {tenant: days for tenant, days in days_of.items() if days > 0}


def port_range(text: str) -> tuple[int, int]:
    """`"20000-20999"` → (20000, 20999); ValueError unless it is LOW-HIGH, two ports, LOW below HIGH."""
    low, dash, high = text.strip().partition("-")
    low, high = low.strip(), high.strip()
    if not (dash and low.isascii() and low.isdigit() and high.isascii() and high.isdigit()):
        raise ValueError(f"expected LOW-HIGH, e.g. 20000-20999, not {text!r}")
    if not 1 <= int(low) < int(high) <= 65535:
        raise ValueError(f"expected two ports (1-65535), the first below the second, not {text!r}")
    return int(low), int(high)
