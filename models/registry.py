"""Which engine runs each kind of model: one small table per kind, one loader per kind.

The server gets every engine here, from its configuration; nothing else imports an engine module.
Engine modules are imported only when an engine of theirs is loaded, so importing the registry
costs nothing. GPU and CPU engines are siblings: the device is an argument, or the name picks
the engine.

======== ============ =====================================================================
kind     configured   engines (module) and the names or paths they take
======== ============ =====================================================================
asr      ``model``    ``ctranslate2`` (asr_ctranslate2; CPU int8, CUDA fp16): ``tiny.en``,
                      ``base``, a CTranslate2 Whisper directory, a Hugging Face name
                      (models/whisper_files.py resolves them)
vad      —            ``silero`` (vad_silero; CPU, ONNX)
embedder ``embedder`` ``flag`` (embed_flag; CPU or CUDA): ``minilm``, ``bge-m3``, a directory,
                      a Hugging Face id
index    —            ``faiss`` (index_faiss; CPU, plus a GPU copy with faiss-gpu)
llm      ``llm``      ``llamacpp`` (llm_llamacpp; CPU or CUDA): ``gemma3-270m``, a ``.gguf`` file;
                      ``exllamav2`` (llm_exllamav2; CUDA only): an EXL2 model directory
ner      ``entities`` ``spacy`` (ner_spacy; CPU)
speaker  —            ``resemblyzer`` (speaker_resemblyzer; CPU: onnxruntime, or CUDA: torch): the
                      d-vector encoder shipped in the ``resemblyzer`` wheel
======== ============ =====================================================================

A new engine is one module implementing a Protocol of `stream.interfaces` plus one entry in its
kind's table. A new kind is one Protocol, one table and one ``load_<kind>`` here. Unknown names
raise `ModelNotFound` listing what is known.

The ASR engine the server runs is assembled by `load_serving_asr`: the primary engine, warmed up;
around it, only when the test-only setting ``inject_asr_fault_after`` is given, the test seam
`models.fault_injection.FaultyAsr`; and, when a fallback is wanted, a CPU engine behind
`models.failover.FailoverAsr`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from models.errors import ModelCorrupt, ModelError, ModelNotFound
from models.model_files import DEFAULT_CACHE_DIR
from models.whisper_files import BUILTIN_MODELS, choose_device, resolve_model
from stream.interfaces import (
    AsrEngine,
    EntityRecognizer,
    LlmEngine,
    SpeakerEncoder,
    VadModel,
    VectorIndex,
)

if TYPE_CHECKING:
    from models.asr_ctranslate2 import CTranslate2Whisper
    from models.embed_flag import FlagEmbedder

__all__ = [
    "BUILTIN_LLMS",
    "BUILTIN_MODELS",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_INDEX",
    "DEFAULT_IVF_THRESHOLD",
    "DEFAULT_NER",
    "DEFAULT_SPEAKER",
    "DEFAULT_VAD",
    "ENGINES",
    "INDEX_ENGINES",
    "LLM_ENGINES",
    "NER_ENGINES",
    "SPEAKER_ENGINES",
    "VAD_ENGINES",
    "IndexDevice",
    "IndexEngine",
    "Kind",
    "ModelCorrupt",
    "ModelError",
    "ModelNotFound",
    "choose_device",
    "llm_engine",
    "load_asr",
    "load_embedder",
    "load_index",
    "load_llm",
    "load_ner",
    "load_serving_asr",
    "load_speaker",
    "load_vad",
    "new_index",
    "set_index_threads",
    "whisper_languages",
]

Kind = Literal["asr", "vad", "embedder", "index", "llm", "ner", "speaker"]
"""The kinds of model the server runs."""

PathLike = str | os.PathLike[str]
T = TypeVar("T")


def _pick(kind: Kind, table: dict[str, T], name: str) -> T:
    """The entry of `table` called `name`, or `ModelNotFound` naming the kind's engines."""
    try:
        return table[name]
    except KeyError:
        raise ModelNotFound(f"unknown {kind} engine {name!r} (known: {', '.join(table)})") from None


# --- asr ----------------------------------------------------------------------------------------


def load_asr(name: str, *, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0,
             num_workers: int = 1, cache_dir: PathLike | None = None, pad_seconds: float = 5.0,
             beam_size: int = 1, allow_download: bool = False,
             auto_languages: Sequence[str] = ()) -> CTranslate2Whisper:
    """Resolve the Whisper model `name` (models/whisper_files.py) and load it on CTranslate2.
    `auto_languages`: the languages detection chooses among (empty: any).

    ``auto`` device and compute type: CUDA float16 when a GPU is visible, else CPU int8.
    """
    from models.asr_ctranslate2 import CTranslate2Whisper

    spec = resolve_model(name, cache_dir=cache_dir, allow_download=allow_download)
    device, compute_type = choose_device(device, compute_type)
    return CTranslate2Whisper(spec.path, name=spec.name, device=device, compute_type=compute_type,
                              cpu_threads=cpu_threads, num_workers=num_workers,
                              pad_seconds=pad_seconds, beam_size=beam_size, auto_languages=auto_languages)


def load_serving_asr(name: str, *, device: str = "auto", compute_type: str = "auto", cpu_threads: int = 0,
                     num_workers: int = 1, cache_dir: PathLike | None = None, fallback: bool = False,
                     fallback_threads: int = 1, fallback_workers: int = 2,
                     inject_fault_after: int | None = None, auto_languages: Sequence[str] = ()) -> AsrEngine:
    """The ASR engine a server runs: `name` on `device`, warmed up, with its optional seams.

    `inject_fault_after` (test only: ``--inject-asr-fault-after``) wraps the primary engine in
    `FaultyAsr`, which fails like a lost GPU after that many batches. `fallback` adds a CPU int8
    engine (`fallback_workers` calls of `fallback_threads` threads) that takes over, through
    `FailoverAsr`, when the primary fails with a device error. `auto_languages`: the languages
    detection chooses among (empty: any). Blocking (seconds).
    """
    primary = load_asr(name, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                       num_workers=num_workers, cache_dir=cache_dir, auto_languages=auto_languages)
    primary.warmup()
    engine: AsrEngine = primary
    if inject_fault_after is not None:
        from models.fault_injection import FaultyAsr

        engine = FaultyAsr(primary, inject_fault_after)
    if not fallback:
        return engine
    from models.failover import FailoverAsr

    backup = load_asr(name, device="cpu", compute_type="int8", cpu_threads=fallback_threads,
                      num_workers=fallback_workers, cache_dir=cache_dir, auto_languages=auto_languages)
    backup.warmup()
    return FailoverAsr(engine, backup)


def whisper_languages() -> tuple[str, ...]:
    """The language codes multilingual Whisper models know (``en``, ``fr``, ... 99 of them)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


# --- vad ----------------------------------------------------------------------------------------


def _silero() -> VadModel:
    from models.vad_silero import SileroVad

    return SileroVad()


VAD_ENGINES: dict[str, Callable[[], VadModel]] = {"silero": _silero}
"""Voice activity engines by name."""
DEFAULT_VAD = "silero"


def load_vad(name: str = DEFAULT_VAD) -> VadModel:
    """The voice activity model `name` (one per process; it opens a stream per session)."""
    return _pick("vad", VAD_ENGINES, name)()


# --- embedder -----------------------------------------------------------------------------------


def load_embedder(name: str = "minilm", *, device: str = "auto", threads: int | None = 1,
                  batch_size: int = 32, allow_download: bool = False,
                  cache_dir: PathLike | None = None) -> FlagEmbedder:
    """The sentence embedder `name` on FlagEmbedding (the only embedding engine; any name resolves
    through `models.embed_flag.resolve_embedder`).

    `device`: ``auto`` (CUDA when torch sees a GPU), ``cpu``, ``cuda`` or ``cuda:N``. `threads`
    sets torch's CPU thread count (process-wide; None leaves it alone).
    """
    from models.embed_flag import FlagEmbedder, resolve_embedder

    files = resolve_embedder(name, allow_download=allow_download,
                             cache_dir=Path(cache_dir) if cache_dir is not None else None)
    return FlagEmbedder(files.path, name=files.name, pooling=files.pooling, device=device,
                        max_length=files.max_length, batch_size=batch_size, threads=threads)


# --- index --------------------------------------------------------------------------------------

IndexDevice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class IndexEngine:
    """How to make an empty index of one engine, and how to read one it saved."""

    new: Callable[[int, str, int, IndexDevice], VectorIndex]
    """(dim, embedder name, ivf threshold, device) → an empty index."""
    load: Callable[[Path, int, str, int, IndexDevice], VectorIndex]
    """(path, dim, embedder name, ivf threshold, device) → the saved index, or `IndexFileError`."""


def _faiss_new(dim: int, embedder_name: str, ivf_threshold: int, device: IndexDevice) -> VectorIndex:
    from models.index_faiss import FaissIndex

    return FaissIndex(dim, embedder_name=embedder_name, ivf_threshold=ivf_threshold, device=device)


def _faiss_load(path: Path, dim: int, embedder_name: str, ivf_threshold: int,
                device: IndexDevice) -> VectorIndex:
    from models.index_faiss import FaissIndex

    return FaissIndex.load(path, dim, embedder_name, ivf_threshold=ivf_threshold, device=device)


INDEX_ENGINES: dict[str, IndexEngine] = {"faiss": IndexEngine(_faiss_new, _faiss_load)}
"""Vector index engines by name."""
DEFAULT_INDEX = "faiss"
DEFAULT_IVF_THRESHOLD = 20_000


def new_index(dim: int, *, embedder_name: str = "", engine: str = DEFAULT_INDEX,
              ivf_threshold: int = DEFAULT_IVF_THRESHOLD, device: IndexDevice = "auto") -> VectorIndex:
    """An empty index of `dim`-dimensional vectors made by the embedder `embedder_name`.

    It stays exact below `ivf_threshold` vectors; past it an approximate (IVF) index takes over.
    """
    return _pick("index", INDEX_ENGINES, engine).new(dim, embedder_name, ivf_threshold, device)


def load_index(path: PathLike, dim: int, embedder_name: str, *, engine: str = DEFAULT_INDEX,
               ivf_threshold: int = DEFAULT_IVF_THRESHOLD, device: IndexDevice = "auto") -> VectorIndex:
    """The index saved at `path`, checked against the embedder it must have been made by.

    Raises `stream.interfaces.IndexFileError` (`IndexStale`, `IndexCorrupt`) when it cannot be
    used: the caller rebuilds it from the store.
    """
    entry = _pick("index", INDEX_ENGINES, engine)
    return entry.load(Path(path), dim, embedder_name, ivf_threshold, device)


def set_index_threads(threads: int) -> None:
    """The process-wide OpenMP thread count of faiss (single adds: 0.1 ms on one thread, several
    ms on two threads of a busy 2-core machine)."""
    import faiss

    faiss.omp_set_num_threads(threads)


# --- llm ----------------------------------------------------------------------------------------

BUILTIN_LLMS: tuple[str, ...] = ("gemma3-270m",)
"""LLM names that resolve offline from installed packages."""


class _LlmLoader(Protocol):
    def __call__(self, name: str, *, device: str, n_threads: int, n_ctx: int, cache_root: Path,
                 chat: bool | None) -> LlmEngine: ...


def _llamacpp(name: str, *, device: str, n_threads: int, n_ctx: int, cache_root: Path,
              chat: bool | None) -> LlmEngine:
    from models.llm_llamacpp import GEMMA_DIR, LlamaCppEngine, ensure_gemma

    if name == "gemma3-270m":  # a base model: completion prompts only
        return LlamaCppEngine(ensure_gemma(cache_root / GEMMA_DIR), name=name, chat=False, device=device,
                              n_threads=n_threads, n_ctx=n_ctx)
    return LlamaCppEngine(Path(name).expanduser(), chat=chat, device=device, n_threads=n_threads, n_ctx=n_ctx)


def _exllamav2(name: str, *, device: str, n_threads: int, n_ctx: int, cache_root: Path,
               chat: bool | None) -> LlmEngine:
    local = Path(name).expanduser()
    if device == "cpu":
        raise ModelError(f"{local} is an EXL2 model: ExLlamaV2 runs on CUDA only, not on device 'cpu'")
    from models.llm_exllamav2 import ExLlamaV2Engine

    return ExLlamaV2Engine(local, chat=chat, max_seq_len=n_ctx)


LLM_ENGINES: dict[str, _LlmLoader] = {"llamacpp": _llamacpp, "exllamav2": _exllamav2}
"""LLM engines by name; `llm_engine` says which one runs a model name or path."""


def llm_engine(name: str) -> str:
    """The engine of `LLM_ENGINES` that runs the LLM `name`: ``llamacpp`` for the built-in names
    and ``.gguf`` files, ``exllamav2`` for a directory with ``config.json`` and ``*.safetensors``.
    Raises `ModelNotFound` for anything else."""
    local = Path(name).expanduser()
    if name in BUILTIN_LLMS or local.suffix.lower() == ".gguf":
        return "llamacpp"
    if local.is_dir() and (local / "config.json").is_file() and any(local.glob("*.safetensors")):
        return "exllamav2"
    raise ModelNotFound(
        f"unknown LLM {name!r} (built-in: {', '.join(BUILTIN_LLMS)}; or a .gguf file; "
        "or a directory with config.json and *.safetensors for ExLlamaV2)"
    )


def load_llm(name: str = "gemma3-270m", *, device: str = "auto", n_threads: int = 2, n_ctx: int = 2048,
             cache_dir: PathLike | None = None, chat: bool | None = None) -> LlmEngine:
    """Load the LLM `name` on the engine `llm_engine` picks.

    ``chat`` is passed to the engine (None: from the model); the bundled ``gemma3-270m`` is a base
    model and always completion-only. Built-in models are assembled under `cache_dir` (default
    ``~/.cache/palabre/models``). Raises `ModelNotFound` when nothing matches and `ModelError`
    when the model cannot run here (e.g. EXL2 without CUDA).
    """
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    loader = LLM_ENGINES[llm_engine(name)]
    return loader(name, device=device, n_threads=n_threads, n_ctx=n_ctx, cache_root=root, chat=chat)


# --- ner ----------------------------------------------------------------------------------------


def _spacy() -> EntityRecognizer:
    from models.ner_spacy import SpacyNer

    return SpacyNer()


NER_ENGINES: dict[str, Callable[[], EntityRecognizer]] = {"spacy": _spacy}
"""Named-entity engines by name."""
DEFAULT_NER = "spacy"


def load_ner(name: str = DEFAULT_NER) -> EntityRecognizer:
    """The named-entity recogniser `name` (its pipelines load at first use)."""
    return _pick("ner", NER_ENGINES, name)()


# --- speaker ------------------------------------------------------------------------------------


def _resemblyzer(device: str, threads: int | None) -> SpeakerEncoder:
    from models.speaker_resemblyzer import ResemblyzerEncoder

    return ResemblyzerEncoder(device=device, threads=threads)


SPEAKER_ENGINES: dict[str, Callable[[str, int | None], SpeakerEncoder]] = {"resemblyzer": _resemblyzer}
"""Speaker-embedding engines by name."""
DEFAULT_SPEAKER = "resemblyzer"


def load_speaker(name: str = DEFAULT_SPEAKER, *, device: str = "auto",
                 threads: int | None = 1) -> SpeakerEncoder:
    """The speaker encoder `name` on `device` (``auto``: CUDA when torch sees a GPU, else CPU),
    warmed up.

    `threads`: torch's CPU thread count in the threads that call it (None leaves it alone).
    """
    loader = _pick("speaker", SPEAKER_ENGINES, name)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return loader(device, threads)


ENGINES: dict[Kind, tuple[str, ...]] = {
    "asr": ("ctranslate2",),
    "vad": tuple(VAD_ENGINES),
    "embedder": ("flag",),
    "index": tuple(INDEX_ENGINES),
    "llm": tuple(LLM_ENGINES),
    "ner": tuple(NER_ENGINES),
    "speaker": tuple(SPEAKER_ENGINES),
}
"""Every kind and the names of its engines."""
