"""Utterance segmentation: a state machine over per-frame speech probabilities.

Rules, all in this file:

* The stream is cut into frames (512 samples at 16 kHz, 32 ms). Each frame has a speech
  probability from the VAD model.
* SILENCE → SPEECH when `min_speech_ms` worth of frames in a row are at or above `threshold`.
  The utterance starts at the first of those frames.
* SPEECH → SILENCE when the probability stays below `neg_threshold` for `min_silence_ms`.
  The utterance ends where that quiet run began. Frames between the two thresholds keep the
  current state (hysteresis).
* An utterance longer than `soft_max_s` ends at a shorter pause (`soft_min_silence_ms`); one that
  reaches `max_utterance_s` is cut at its quietest frame of the last `cut_search_s` seconds, and a
  new utterance starts right there.
* Boundaries are sample indices from the start of the stream; callers add `pad_ms` when they cut
  audio for the recogniser.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "SegmentEvent",
    "SegmentState",
    "Segmenter",
    "SegmenterConfig",
    "SpeechEnd",
    "SpeechStart",
]


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    """Tunables of utterance segmentation (times in milliseconds or seconds as named)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: int = 96
    min_silence_ms: int = 480
    soft_max_s: float = 12.0
    soft_min_silence_ms: int = 160
    max_utterance_s: float = 20.0
    cut_search_s: float = 3.0
    pad_ms: int = 200

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if not 0 < self.soft_max_s <= self.max_utterance_s <= 28.0:
            raise ValueError("need 0 < soft_max_s <= max_utterance_s <= 28 (one Whisper window)")


class SegmentState(Enum):
    SILENCE = "silence"
    SPEECH = "speech"


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """An utterance began at `sample`."""

    sample: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """The open utterance ended at `sample`; `forced` when cut for length, not at a pause."""

    sample: int
    forced: bool = False


SegmentEvent = SpeechStart | SpeechEnd


class Segmenter:
    """Turns a sequence of frame speech probabilities into utterance boundaries."""

    def __init__(self, config: SegmenterConfig, frame_samples: int, sample_rate: int) -> None:
        self.config = config
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        frame_ms = 1000.0 * frame_samples / sample_rate
        self._min_speech_frames = max(1, round(config.min_speech_ms / frame_ms))
        self._min_silence_frames = max(1, round(config.min_silence_ms / frame_ms))
        self._soft_silence_frames = max(1, round(config.soft_min_silence_ms / frame_ms))
        self._soft_max_frames = round(config.soft_max_s * sample_rate / frame_samples)
        self._max_frames = round(config.max_utterance_s * sample_rate / frame_samples)
        self._search_frames = max(1, round(config.cut_search_s * sample_rate / frame_samples))
        self.state = SegmentState.SILENCE
        self.frames = 0
        """Frames seen so far."""
        self._run = 0
        """Length of the current run of speech frames (in SILENCE) or quiet frames (in SPEECH)."""
        self._utterance_start_frame = 0
        self._recent: list[float] = []
        """Probabilities of the open utterance's frames (for choosing a forced cut)."""

    @property
    def pause_start(self) -> int | None:
        """Sample where the open utterance's current run of quiet frames began, or None.

        If the utterance ends at this pause, it ends at this sample.
        """
        if self.state is SegmentState.SPEECH and self._run > 0:
            return (self.frames - self._run) * self.frame_samples
        return None

    def push(self, probability: float) -> list[SegmentEvent]:
        """Advance by one frame of the given speech probability."""
        cfg = self.config
        index = self.frames
        self.frames += 1
        if self.state is SegmentState.SILENCE:
            self._run = self._run + 1 if probability >= cfg.threshold else 0
            if self._run >= self._min_speech_frames:
                self._open(index - self._run + 1)
                return [SpeechStart(self._utterance_start_frame * self.frame_samples)]
            return []

        self._recent.append(probability)
        self._run = self._run + 1 if probability < cfg.neg_threshold else 0
        length = self.frames - self._utterance_start_frame
        needed = self._soft_silence_frames if length > self._soft_max_frames else self._min_silence_frames
        if self._run >= needed:
            end_frame = self.frames - self._run
            self._close()
            return [SpeechEnd(end_frame * self.frame_samples)]
        if length >= self._max_frames:
            return self._forced_cut()
        return []

    def finish(self) -> list[SegmentEvent]:
        """End of stream: close an open utterance at the last frame of speech."""
        if self.state is SegmentState.SILENCE:
            return []
        end_frame = self.frames - self._run
        self._close()
        return [SpeechEnd(end_frame * self.frame_samples)]

    def _forced_cut(self) -> list[SegmentEvent]:
        window = self._recent[-self._search_frames :]
        quietest = min(range(len(window)), key=window.__getitem__)
        cut_frame = self.frames - len(window) + quietest
        kept = self._recent[len(self._recent) - len(window) + quietest :]
        self._open(cut_frame)
        self._recent = kept
        self._run = 0
        sample = cut_frame * self.frame_samples
        return [SpeechEnd(sample, forced=True), SpeechStart(sample)]

    def _open(self, start_frame: int) -> None:
        self.state = SegmentState.SPEECH
        self._utterance_start_frame = start_frame
        self._run = 0
        self._recent = []

    def _close(self) -> None:
        self.state = SegmentState.SILENCE
        self._run = 0
        self._recent = []
