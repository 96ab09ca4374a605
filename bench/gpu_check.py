"""GPU checks for a CUDA machine: faster-whisper on CUDA, faiss-gpu, NVML, ExLlamaV2.

Run on a machine with an NVIDIA GPU (after `pip install -e '.[gpu]'`)::

    python -m bench.gpu_check [--out report.json]

Each check prints OK or FAILED with its timings; nothing is downloaded: Whisper is the bundled
tiny.en, and ExLlamaV2 runs a tiny randomly initialised Llama model (weights and a BPE tokenizer)
that this script writes into a temporary folder. Without CUDA every check reports why it could
not run. The script exits 0 when every check that could run passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Check = Callable[[], dict[str, Any]]


def check_nvml() -> dict[str, Any]:
    """NVML: every device's name, memory, utilisation, temperature and power."""
    import pynvml

    pynvml.nvmlInit()
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                {
                    "name": str(pynvml.nvmlDeviceGetName(handle)),
                    "memory_used_gib": round(memory.used / 2**30, 2),
                    "memory_total_gib": round(memory.total / 2**30, 2),
                    "utilisation_pct": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                    "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
                    "power_w": round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000, 1),
                }
            )
        return {"devices": devices}
    finally:
        pynvml.nvmlShutdown()


def check_whisper_cuda() -> dict[str, Any]:
    """Palabre's CTranslate2 Whisper engine on CUDA float16: load, one utterance, a batch of 8."""
    from models.registry import load_asr
    from stream.interfaces import SAMPLE_RATE, AsrInput

    started = time.perf_counter()
    engine = load_asr("tiny.en", device="cuda", compute_type="float16")
    load_s = time.perf_counter() - started
    engine.warmup()
    t = np.arange(3 * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    audio = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    timings = {}
    for size in (1, 8, 32):
        started = time.perf_counter()
        engine.transcribe_batch([AsrInput(audio, "en")] * size)
        timings[f"batch_{size}_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return {"device": engine.device, "load_s": round(load_s, 2), **timings}


def check_faiss_gpu() -> dict[str, Any]:
    """faiss-gpu through Palabre's index: 100k vectors, single adds and searches on the GPU copy."""
    import faiss

    from models.index_faiss import FaissIndex

    gpus = faiss.get_num_gpus()
    if gpus == 0:
        raise RuntimeError("faiss sees no GPU (is faiss-gpu installed instead of faiss-cpu?)")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(384, embedder_name="random", device="cuda", background_rebuild=False)
    started = time.perf_counter()
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    add_s = time.perf_counter() - started
    queries = vectors[:1000]
    started = time.perf_counter()
    index.search(queries, 5)
    search_ms = (time.perf_counter() - started) * 1000 / len(queries)
    return {
        "gpus": gpus,
        "kind": index.kind,
        "add_100k_s": round(add_s, 2),
        "search_ms_per_query": round(search_ms, 3),
    }


def write_tiny_llama(folder: Path) -> None:
    """A 2-layer Llama with random fp16 weights and a small BPE tokenizer: enough to run ExLlamaV2."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = ["the meeting starts at nine", "the budget is four hundred thousand euros"] * 50
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer.train_from_iterator(text, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    vocab, hidden, layers, heads, inter = 256, 256, 2, 4, 512
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)

    def w(*shape: int) -> Any:
        return (torch.randn(*shape) * 0.02).half()

    tensors = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": torch.ones(hidden).half()}
    tensors["lm_head.weight"] = w(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{name}.weight"] = w(hidden, hidden)
        tensors[p + "mlp.gate_proj.weight"] = w(inter, hidden)
        tensors[p + "mlp.up_proj.weight"] = w(inter, hidden)
        tensors[p + "mlp.down_proj.weight"] = w(hidden, inter)
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden).half()
        tensors[p + "post_attention_layernorm.weight"] = torch.ones(hidden).half()
    save_file(tensors, str(folder / "model.safetensors"))


def check_exllamav2() -> dict[str, Any]:
    """Palabre's ExLlamaV2 engine on a tiny random model: load, stream 32 tokens."""
    from models.llm_exllamav2 import ExLlamaV2Engine
    from stream.interfaces import LlmRequest

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tiny_llama(folder)
        started = time.perf_counter()
        engine = ExLlamaV2Engine(folder, chat=False, max_seq_len=512)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        first: float | None = None
        pieces = 0
        for _ in engine.generate(LlmRequest(prompt="the meeting", max_tokens=32)):
            if first is None:
                first = time.perf_counter() - started
            pieces += 1
        total = time.perf_counter() - started
    return {
        "load_s": round(load_s, 2),
        "first_piece_ms": round((first or 0.0) * 1000, 1),
        "pieces": pieces,
        "pieces_per_s": round(pieces / total, 1) if total > 0 else None,
    }


CHECKS: dict[str, Check] = {
    "nvml": check_nvml,
    "whisper_cuda": check_whisper_cuda,
    "faiss_gpu": check_faiss_gpu,
    "exllamav2": check_exllamav2,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)
    print("$ python -m bench.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {}
    failed = 0
    for name in args.only or list(CHECKS):
        started = time.perf_counter()
        try:
            detail = CHECKS[name]()
            results[name] = {"ok": True, **detail}
            print(f"OK      {name:14s} {json.dumps(detail)} ({time.perf_counter() - started:.1f} s)")
        except Exception as error:  # a check that cannot run reports why, the others go on
            failed += 1
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            print(f"FAILED  {name:14s} {type(error).__name__}: {error}")
            traceback.print_exc(limit=2)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
