"""The cost of word timings (`start.word_timestamps`): each final's engine call with and without
the alignment pass, on the English reference speech, one final at a time (batch of 1, as a final
is scheduled when its utterance ends).

    python -m bench.words --model tiny.en --repeats 5

Prints, per mode, the engine time of a final (p50, p95; what the alignment adds to a final's
latency) and the CPU seconds it used (process CPU time: what it takes from other sessions).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.common import DEFAULT_AUDIO_DIR, command_line, load_references
from bench.streams import percentile
from models.registry import load_asr
from stream.interfaces import AsrInput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR)
    args = parser.parse_args()
    references = load_references(args.audio_dir)
    engine = load_asr(args.model, device="cpu", cpu_threads=args.cpu_threads)
    engine.warmup()
    seconds = sum(r.seconds for r in references)
    print(f"$ {command_line()}")
    print(f"{len(references)} files, {seconds:.1f} s of speech, {args.repeats} repeats, "
          f"{args.cpu_threads} threads (a shared, loaded machine: figures are pessimistic)")
    results: dict[bool, tuple[list[float], float]] = {False: ([], 0.0), True: ([], 0.0)}
    for _ in range(args.repeats):
        for words in (False, True):  # interleaved, so that load changes hit both alike
            walls, cpu = results[words]
            for reference in references:
                inputs = [AsrInput(reference.samples, "en", word_timestamps=words)]
                cpu_before, wall_before = time.process_time(), time.perf_counter()
                [output] = engine.transcribe_batch(inputs)
                walls.append(time.perf_counter() - wall_before)
                cpu += time.process_time() - cpu_before
                assert (output.words is not None) == words
            results[words] = (walls, cpu)
    base_walls, base_cpu = results[False]
    for words, (walls, cpu) in results.items():
        label = "with words   " if words else "without words"
        p50, p95 = percentile(walls, 0.5), percentile(walls, 0.95)
        assert p50 is not None and p95 is not None
        mean, per_final = statistics.mean(walls) * 1000, cpu / len(walls) * 1000
        print(f"{label}: engine time per final p50 {p50 * 1000:6.0f} ms, p95 {p95 * 1000:6.0f} ms, "
              f"mean {mean:6.0f} ms; CPU {per_final:6.0f} ms per final, "
              f"{cpu / (seconds * args.repeats):.3f} CPU s per s of speech")
    with_walls, with_cpu = results[True]
    print(f"word timings add {(statistics.mean(with_walls) / statistics.mean(base_walls) - 1) * 100:+.0f}% "
          f"engine time and {(with_cpu / base_cpu - 1) * 100:+.0f}% CPU to a final")


if __name__ == "__main__":
    main()
