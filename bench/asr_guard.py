"""How often the repetition guard of the CTranslate2 Whisper engine fires, and what decoding costs.

The inputs are what a live session asks the recogniser: each file is streamed through a real
`stream.session.Session` (silero VAD, partials and early finals on, a -70 dBFS dither as in
bench/capacity.py, `--seeds` dithers each) and every partial and final request is kept. French:
bench/capacity.py's `FRENCH_SENTENCES` read by espeak-ng (their text the reference) and
commonvoice_fr.wav (reference: offline faster-whisper, beam 5, whole file); English: jfk.flac
and the sb_*.wav of refs.json. Each input is transcribed alone, language given, greedy.

Prints per model: inputs, CPU time of this process per input (partials and finals), how many
decodes looked looped (ran out of tokens, a high compression ratio, words repeated at the end)
and the WER of the finals against the references (lower case, punctuation
stripped; jiwer).

    python -m bench.asr_guard [--runs base:fr tiny.en:en] [--seeds 3] [--threads 1]
                              [--audio-dir /work/shared/audio]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import jiwer
import numpy as np

from bench.asr_padding import decode
from bench.capacity import DITHER, ESPEAK_SPEED, FRENCH_RECORDING, FRENCH_SENTENCES
from bench.common import normalise
from bench.vocabulary import espeak
from models.registry import load_asr, load_vad
from stream.interfaces import SAMPLE_RATE, AsrInput, AsrOutput, Audio, VadModel
from stream.session import Session

Requests = list[tuple[str, Audio]]
"""(kind, audio) of each request a session made, in order."""


def session_requests(vad: VadModel, speech: Audio, language: str, seed: int) -> Requests:
    """The partial and final requests of a session that hears `speech` between 1 s and 3 s of silence."""
    rng = np.random.default_rng(seed)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    samples = np.concatenate([silence, speech, silence, silence, silence])
    samples = (samples + rng.normal(0.0, DITHER, len(samples))).astype(np.float32)
    session = Session("bench", "bench", vad.open_stream(), language=language)
    kept: Requests = []
    for k in range(0, len(samples) + 320, 320):
        output = session.feed(samples[k:k + 320]) if k < len(samples) else session.stop()
        for request in output.requests:
            kept.append((request.kind, request.payload.input.audio))
            if request.kind == "partial":  # answered at once, so that the next partial comes
                session.on_result(request.payload, AsrOutput(text="", language=language))
    return kept


def references(language: str, audio_dir: Path) -> dict[str, tuple[str, Audio]]:
    """name → (reference text, 16 kHz audio) of the files of `language`."""
    if language == "fr":
        from faster_whisper import WhisperModel

        from models.whisper_files import resolve_model

        refs = {f"espeak_fr_{i}": (text, espeak(text, voice, ESPEAK_SPEED))
                for i, (voice, text) in enumerate(FRENCH_SENTENCES, 1)}
        samples = decode(audio_dir / FRENCH_RECORDING)
        base = str(resolve_model("base").path)
        offline = WhisperModel(base, device="cpu", compute_type="int8", cpu_threads=1)
        segments, _ = offline.transcribe(samples, language="fr", beam_size=5)
        refs[FRENCH_RECORDING] = (" ".join(s.text.strip() for s in segments), samples)
        return refs
    texts = json.loads((audio_dir / "refs.json").read_text())
    return {name: (ref["text"], decode(audio_dir / name)) for name, ref in texts.items()
            if "text" in ref and ref.get("lang") == "en"}


def measure(model: str, language: str, audio_dir: Path, seeds: int, threads: int) -> None:
    """Transcribe every request of every file and seed alone; print the figures."""
    vad = load_vad()
    refs = references(language, audio_dir)
    streams = {(name, seed): session_requests(vad, audio, language, seed)
               for name, (_, audio) in refs.items() for seed in range(seeds)}
    engine = load_asr(model, device="cpu", compute_type="int8", cpu_threads=threads)
    engine.warmup()
    counts: collections.Counter[str] = collections.Counter()
    cpu: dict[str, float] = collections.defaultdict(float)
    finals: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for key, requests in streams.items():
        for kind, audio in requests:
            started = time.process_time()
            [out] = engine.transcribe_batch([AsrInput(audio=audio, language=language)])
            cpu[kind] += time.process_time() - started
            counts[kind] += 1
            counts["guard fired"] += out.fallback
            if kind == "final":
                finals[key].append(out.text)
    hypotheses = [normalise(" ".join(texts)) for texts in finals.values()]
    wer = jiwer.wer([normalise(refs[name][0]) for name, _ in finals], hypotheses)
    print(f"{model} ({language}), {len(refs)} files x {seeds} dithers, {threads} thread(s):")
    for kind in ("partial", "final"):
        each = 1000 * cpu[kind] / max(1, counts[kind])
        print(f"  {kind:8s} {counts[kind]:4d} inputs, CPU {each:5.0f} ms each")
    print(f"  guard fired on {counts['guard fired']} inputs; finals WER {wer:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["base:fr", "tiny.en:en"], help="model:language")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--audio-dir", type=Path, default=Path("/work/shared/audio"))
    args = parser.parse_args()
    print("Command: python -m bench.asr_guard " + " ".join(
        ["--runs", *args.runs, "--seeds", str(args.seeds), "--threads", str(args.threads)]))
    for run in args.runs:
        model, language = run.split(":")
        measure(model, language, args.audio_dir, args.seeds, args.threads)


if __name__ == "__main__":
    main()
