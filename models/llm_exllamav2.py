"""EXL2 language models on ExLlamaV2 (CUDA only): a streaming `LlmEngine` for GPU servers.

``exllamav2`` compiles its CUDA extension when imported, so it is imported inside the
constructor, after checking that torch sees a CUDA device: on a machine without one the
constructor raises `ModelError` with a clear message instead of a compiler error.

Generation uses `ExLlamaV2StreamingGenerator` (no flash-attn needed): one generation at a time
per engine (a lock, as for llama.cpp), prompt prefix reused from the previous generation by
the generator itself. Closing the iterator or setting `cancel` stops after the current token;
`cancel` also aborts a prompt evaluation in progress (ExLlamaV2's ``abort_event``).

Chat models: the model directory's ``tokenizer_config.json`` ``chat_template`` (Jinja) formats
the messages, with ``add_generation_prompt=True``; ``chat=None`` means "chat when it has one".
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.errors import ModelError, ModelNotFound
from stream.interfaces import LlmRequest

__all__ = [
    "ExLlamaV2Engine",
]


class ExLlamaV2Engine:
    """An EXL2 model directory on one or more CUDA GPUs (split automatically), as an `LlmEngine`."""

    name: str
    device: str
    chat: bool

    def __init__(self, model_dir: str | os.PathLike[str], *, name: str | None = None,
                 chat: bool | None = None, max_seq_len: int = 4096) -> None:
        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            raise ModelNotFound(f"{path} is not an EXL2 model directory (config.json and *.safetensors)")
        try:
            import torch
        except ImportError as exc:
            raise ModelError("ExLlamaV2 needs torch with CUDA; torch is not installed") from exc
        if not torch.cuda.is_available():
            raise ModelError("ExLlamaV2 needs a CUDA GPU and none is visible here; "
                             "use a GGUF model on llama.cpp instead")
        try:
            from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
            from exllamav2.generator import ExLlamaV2Sampler, ExLlamaV2StreamingGenerator
        except ImportError as exc:
            raise ModelError(f"ExLlamaV2 is not usable here (pip install exllamav2): {exc}") from exc

        template = _chat_template(path)
        if chat and template is None:
            raise ModelError(f"{path.name} has no chat_template in tokenizer_config.json; it cannot chat")
        config = ExLlamaV2Config(str(path))
        config.max_seq_len = min(max_seq_len, config.max_seq_len)
        self._model = ExLlamaV2(config)
        self._cache = ExLlamaV2Cache(self._model, max_seq_len=config.max_seq_len, lazy=True)
        self._model.load_autosplit(self._cache)
        self._tokenizer = ExLlamaV2Tokenizer(config)
        self._generator = ExLlamaV2StreamingGenerator(self._model, self._cache, self._tokenizer)
        self._sampler = ExLlamaV2Sampler
        self._template = template
        self._lock = threading.Lock()
        self.name = name or path.name
        self.device = "cuda"
        self.chat = template is not None if chat is None else chat
        self.max_seq_len = config.max_seq_len

    def generate(self, request: LlmRequest, *, cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield text pieces as they are decoded; closing the iterator or setting `cancel` stops it."""
        if request.messages and not self.chat:
            raise ValueError(f"{self.name} is not a chat model: give it a completion prompt")
        if not request.messages and request.prompt is None:
            raise ValueError("an LlmRequest needs a prompt or messages")
        return self._generate(request, cancel or threading.Event())

    def _generate(self, request: LlmRequest, cancel: threading.Event) -> Iterator[str]:
        if request.messages:
            text, add_bos = self._format_chat(request.messages), False
        else:
            text, add_bos = request.prompt or "", True
        with self._lock:
            ids = self._tokenizer.encode(text, add_bos=add_bos, encode_special_tokens=True)
            budget = max(1, min(request.max_tokens, self.max_seq_len - ids.shape[-1]))
            settings = self._sampler.Settings()
            if request.temperature <= 0.0:
                settings.top_k = 1  # greedy
            else:
                settings.temperature = request.temperature
            generator = self._generator
            generator.set_stop_conditions([self._tokenizer.eos_token_id, *request.stop])
            generator.begin_stream_ex(ids, settings, abort_event=cancel)
            produced = 0
            while produced < budget and not cancel.is_set():
                result: dict[str, Any] = generator.stream_ex()
                produced += int(result["chunk_token_ids"].shape[-1]) or 1
                if result["chunk"]:
                    yield result["chunk"]
                if result["eos"]:
                    break

    def _format_chat(self, messages: tuple[tuple[str, str], ...]) -> str:
        import jinja2

        assert self._template is not None
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        env.globals["raise_exception"] = raise_exception
        tokenizer = self._tokenizer
        return env.from_string(self._template).render(
            messages=[{"role": role, "content": content} for role, content in messages],
            add_generation_prompt=True,
            bos_token=getattr(tokenizer, "bos_token", "") or "",
            eos_token=getattr(tokenizer, "eos_token", "") or "",
        )


def _chat_template(path: Path) -> str | None:
    """The Jinja chat template of a model directory, or None."""
    for file in ("tokenizer_config.json", "chat_template.json"):
        try:
            template = json.loads((path / file).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError):
            continue
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str) and template:
            return template
    jinja = path / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None
