"""Speaker labels on sequences of utterances: accuracy, number of labels, embedding cost.

Each sequence is a list of utterances with their true speaker, fed in order, one at a time,
through the speaker encoder (`models.registry.load_speaker`) and the online clustering of
`stream.diarization.Diarizer`, as the server does for a diarized conversation:

- ``sb``: the ten read sentences of ../shared/audio, sb_spk1_snt1, sb_spk2_snt1, sb_spk1_snt2, …
  (two readers, alternating);
- ``stereo``: stereo_two_speakers.wav (one speaker per channel, 5 s, overlapping for the first
  2.5 s), cut by its structure into the utterances of each channel alone: ch1 0.3–2.5 s, ch0
  0.3–2.5 s, ch0 2.6–4.9 s;
- ``espeak2``, ``espeak3``: two or three espeak-ng voices reading four sentences each, in turn.

Accuracy is utterance-level: the share of utterances whose label is their speaker's under the
best one-to-one mapping of labels to speakers (labels as given at the time, merges not applied).
Cost per utterance, over `--rounds` passes of each sequence: the encoder called with one
utterance (a batch of one: wall time mean and p95, and the process's CPU time, which a busy
machine does not inflate as it does wall time), and called once with the whole sequence (the
server's micro-batcher batches when it can: wall time of the call over its utterances, mean and
p95 over the rounds). The last line sums up every sequence.

    python -m bench.diarization [--audio-dir ../shared/audio] [--threshold 0.7] [--threads 1]
        [--max-windows 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr

from bench.common import DEFAULT_AUDIO_DIR, SAMPLE_RATE, Samples
from bench.streams import percentile
from models.registry import load_speaker
from palabre_client import load_audio
from stream.diarization import DEFAULT_MERGE_THRESHOLD, DEFAULT_THRESHOLD, Diarizer
from stream.interfaces import SpeakerEncoder

ESPEAK_VOICES = ("en+m7", "en-gb-x-rp+f3", "en-us")
"""The ``espeak2`` sequence reads with the first two, ``espeak3`` with all three (en-us and en+m7
are 0.79 apart for resemblyzer, same synthesiser and prosody: one speaker below a 0.8 threshold)."""
ESPEAK_SENTENCES = (
    "The budget for next quarter has to be approved by Friday.",
    "I think we should move the launch to the second week of March.",
    "Could you send me the figures from the last meeting please?",
    "Let us keep the design simple and measure it before we change anything.",
)


@dataclass(frozen=True)
class Utterance:
    speaker: str
    samples: Samples


def sb_sequence(audio_dir: Path) -> list[Utterance]:
    """The ten sb_*.wav, the two readers alternating."""
    return [Utterance(f"spk{s}", load_audio(audio_dir / f"sb_spk{s}_snt{n}.wav", SAMPLE_RATE))
            for n in range(1, 6) for s in (1, 2)]


def stereo_sequence(audio_dir: Path) -> list[Utterance]:
    """stereo_two_speakers.wav's channels cut where each speaks alone (module docstring)."""
    frames = []
    with av.open(str(audio_dir / "stereo_two_speakers.wav")) as container:
        rate = container.streams.audio[0].rate
        for frame in container.decode(audio=0):
            frames.append(frame.to_ndarray().reshape(-1, 2))
    pcm = np.concatenate(frames).astype(np.float32) / 32768
    channels = [np.asarray(soxr.resample(pcm[:, c], rate, SAMPLE_RATE), np.float32) for c in (0, 1)]

    def cut(channel: int, start: float, end: float) -> Utterance:
        first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        return Utterance(f"ch{channel}", channels[channel][first:last])

    return [cut(1, 0.3, 2.5), cut(0, 0.3, 2.5), cut(0, 2.6, 4.9)]


def espeak_sequence(voices: int) -> list[Utterance]:
    """The first `voices` espeak-ng voices reading in turn (empty when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        return []
    out = []
    for sentence, voice in itertools.product(ESPEAK_SENTENCES, ESPEAK_VOICES[:voices]):
        wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", sentence], capture_output=True,
                             check=True).stdout
        with wave.open(io.BytesIO(wav)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        out.append(Utterance(voice, np.asarray(soxr.resample(pcm, rate, SAMPLE_RATE), np.float32)))
    return out


def best_mapping_accuracy(truth: list[str], labels: list[str | None]) -> float:
    """Share of utterances right under the best one-to-one mapping of labels to true speakers."""
    speakers = sorted(set(truth))
    found = sorted({label for label in labels if label is not None})
    best = 0
    for chosen in itertools.permutations(speakers, min(len(speakers), len(found))):
        for assigned in itertools.permutations(found, len(chosen)):
            mapping = dict(zip(assigned, chosen, strict=True))
            best = max(best, sum(1 for t, lab in zip(truth, labels, strict=True)
                                 if lab is not None and mapping.get(lab) == t))
    return best / len(truth)


@dataclass
class Cost:
    """What embedding cost, per utterance, in ms."""

    alone: list[float]
    """Wall time of each call with one utterance."""
    cpu_alone: float
    """The process's CPU time per call with one utterance (what a busy machine cannot inflate)."""
    batched: list[float]
    """Wall time of each call with the whole sequence, over its utterances."""

    def __add__(self, other: Cost) -> Cost:
        count = len(self.alone) + len(other.alone)
        cpu = (self.cpu_alone * len(self.alone) + other.cpu_alone * len(other.alone)) / max(1, count)
        return Cost(self.alone + other.alone, cpu, self.batched + other.batched)

    def row(self) -> str:
        """mean and p95 alone, CPU alone, mean and p95 batched."""
        return (f"{statistics.mean(self.alone):>6.1f} {percentile(self.alone, 0.95) or 0:>6.1f} "
                f"{self.cpu_alone:>6.1f} {statistics.mean(self.batched):>7.1f} "
                f"{percentile(self.batched, 0.95) or 0:>6.1f}")


@dataclass
class Result:
    name: str
    utterances: int
    speakers: int
    labels: int
    accuracy: float
    merges: int
    cost: Cost


def measure(seq: list[Utterance], encoder: SpeakerEncoder, rounds: int) -> Cost:
    """Time the encoder on `seq`: each utterance alone, then the whole sequence in one call."""
    encoder.embed([seq[0].samples])  # warm-up
    alone = []
    cpu_started = time.process_time()
    for _ in range(rounds):
        for utt in seq:
            started = time.perf_counter()
            encoder.embed([utt.samples])
            alone.append(1000 * (time.perf_counter() - started))
    cpu = 1000 * (time.process_time() - cpu_started) / len(alone)
    batched = []
    for _ in range(rounds):
        started = time.perf_counter()
        encoder.embed([u.samples for u in seq])
        batched.append(1000 * (time.perf_counter() - started) / len(seq))
    return Cost(alone, cpu, batched)


def run(name: str, seq: list[Utterance], encoder: SpeakerEncoder, threshold: float, merge: float,
        rounds: int) -> Result:
    """Embed and label one sequence; time the encoder."""
    vectors = encoder.embed([u.samples for u in seq])
    diarizer = Diarizer(threshold, merge)
    assignments = [diarizer.assign(v) for v in vectors]
    labels = [a.label for a in assignments]
    truth = [u.speaker for u in seq]
    return Result(name, len(seq), len(set(truth)), len({lab for lab in labels if lab}),
                  best_mapping_accuracy(truth, labels), sum(len(a.merged) for a in assignments),
                  measure(seq, encoder, rounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-dir", type=Path, default=DEFAULT_AUDIO_DIR)
    parser.add_argument("--speaker-model", default="resemblyzer")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--merge-threshold", type=float, default=DEFAULT_MERGE_THRESHOLD)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="1.6 s windows per utterance, for encoders that have such a cap "
                             "(default: the encoder's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each sequence")
    args = parser.parse_args(argv)
    encoder = load_speaker(args.speaker_model, device="cpu", threads=args.threads)
    if args.max_windows is not None:
        encoder.max_windows = args.max_windows  # type: ignore[attr-defined]
    sequences = {"sb": sb_sequence(args.audio_dir), "stereo": stereo_sequence(args.audio_dir),
                 "espeak2": espeak_sequence(2), "espeak3": espeak_sequence(3)}
    print("$ python -m bench.diarization " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(f"encoder {encoder.name} on {encoder.device}, {args.threads} thread(s), "
          f"max windows {getattr(encoder, 'max_windows', '-')}; threshold {args.threshold}, "
          f"merge {args.merge_threshold}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':<35} {'ms/utterance, 1 per call':>20} {'batched':>14}")
    print(f"{'sequence':<9} {'utts':>4} {'true':>4} {'labels':>6} {'accuracy':>8} "
          f"{'mean':>6} {'p95':>6} {'cpu':>6} {'mean':>7} {'p95':>6}")
    total: Cost | None = None
    for name, seq in sequences.items():
        if not seq:
            print(f"{name:<9} skipped (no audio)")
            continue
        r = run(name, seq, encoder, args.threshold, args.merge_threshold, args.rounds)
        total = r.cost if total is None else total + r.cost
        print(f"{r.name:<9} {r.utterances:>4} {r.speakers:>4} {r.labels:>6} {r.accuracy:>8.1%} "
              f"{r.cost.row()}" + (f"  ({r.merges} merges)" if r.merges else ""))
    if total is not None:
        print(f"{'all':<35} {total.row()}")


if __name__ == "__main__":
    main()
