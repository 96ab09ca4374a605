"""Accuracy and cost of length-aware padding, and of batching, for the CTranslate2 Whisper engine.

Real read speech with reference text (the files of refs.json that have a `text`: sb_*.wav and
jfk.flac), decoded with PyAV to 16 kHz mono. For each model and each `pad_seconds` (30 = the full
window, as faster-whisper does; 5; 3), every file is transcribed alone (language given, greedy)
and the script prints the WER (lowercase, punctuation stripped; jiwer), the total wall time and
how many inputs the repetition guard cut.

Then batching at the default padding: B = 1, 2, 4, 8 inputs of about 3 s (the sb_* files,
cycled) in one `transcribe_batch` call, against the same inputs one call each.

    python -m bench.asr_padding [--models tiny.en base] [--pads 30 5 3] [--threads 2]
                                [--repeats 1] [--audio-dir /work/shared/audio] [--cache-dir DIR]

Times are the minimum over `--repeats` runs, as wall time and as CPU time of this process (all
its threads): on a shared machine the CPU time is the steadier measure of work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import jiwer
import numpy as np

from bench.common import normalise
from models.asr_ctranslate2 import CTranslate2Whisper
from models.registry import load_asr
from stream.interfaces import SAMPLE_RATE, AsrInput, Audio


def decode(path: Path) -> Audio:
    """Any audio file → 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


@dataclass
class Timing:
    """Best wall and CPU (all threads of this process) seconds over the repeats."""

    wall: float = 0.0
    cpu: float = 0.0

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def timed(engine: CTranslate2Whisper, inputs: list[AsrInput], repeats: int) -> tuple[Timing, list[str], int]:
    """Best times of one `transcribe_batch(inputs)`, its texts and its fallback count."""
    best = Timing(float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = engine.transcribe_batch(inputs)
        best = Timing(min(best.wall, time.perf_counter() - wall), min(best.cpu, time.process_time() - cpu))
    return best, [o.text for o in outputs], sum(o.fallback for o in outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--pads", nargs="*", type=float, default=[30.0, 5.0, 3.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--audio-dir", type=Path, default=Path("/work/shared/audio"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    print("command:", " ".join([Path(sys.executable).name, "-m", "bench.asr_padding", *sys.argv[1:]]))
    refs = json.loads((args.audio_dir / "refs.json").read_text())
    names = sorted(n for n, r in refs.items() if "text" in r and (args.audio_dir / n).is_file())
    audio = {n: decode(args.audio_dir / n) for n in names}
    references = [normalise(refs[n]["text"]) for n in names]
    seconds = sum(len(a) for a in audio.values()) / SAMPLE_RATE
    print(f"{len(names)} files, {seconds:.1f} s of speech; int8 CPU, {args.threads} threads, greedy, "
          f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    print("\nmodel    pad     WER    wall ms   CPU ms  fallbacks")
    for model in args.models:
        for pad in args.pads:
            engine = load_asr(model, device="cpu", cpu_threads=args.threads, cache_dir=args.cache_dir,
                              pad_seconds=pad)
            engine.warmup()
            total, texts, fallbacks = Timing(), [], 0
            for n in names:
                took, [text], fell = timed(engine, [AsrInput(audio=audio[n], language="en")], args.repeats)
                total, fallbacks = total + took, fallbacks + fell
                texts.append(normalise(text))
            label = "30 s" if pad >= 30 else f"+{pad:g} s"
            wer = jiwer.wer(references, texts)
            print(f"{model:8} {label:6} {wer:.3f}  {total.wall * 1000:7.0f}  {total.cpu * 1000:7.0f}  "
                  f"{fallbacks:9d}", flush=True)

    short = [audio[n] for n in names if n.startswith("sb_")]
    mean_seconds = np.mean([len(a) for a in short]) / SAMPLE_RATE
    print(f"\nbatching, default padding (+5 s), inputs of {mean_seconds:.1f} s on average")
    print("model    B   batch wall/CPU ms   singles wall/CPU ms   batch/singles wall, CPU")
    for model in args.models:
        engine = load_asr(model, device="cpu", cpu_threads=args.threads, cache_dir=args.cache_dir)
        engine.warmup()
        for size in args.batches:
            inputs = [AsrInput(audio=short[k % len(short)], language="en") for k in range(size)]
            batch, _, _ = timed(engine, inputs, args.repeats)
            singles = Timing()
            for x in inputs:
                singles = singles + timed(engine, [x], args.repeats)[0]
            print(f"{model:8} {size:<3} {batch.wall * 1000:7.0f} / {batch.cpu * 1000:7.0f}  "
                  f"{singles.wall * 1000:9.0f} / {singles.cpu * 1000:7.0f}  "
                  f"{batch.wall / singles.wall:10.2f}, {batch.cpu / singles.cpu:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
