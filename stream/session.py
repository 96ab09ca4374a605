"""One live audio stream: audio → VAD → segmenter → recognition requests → events.

A `Session` is sans-I/O, like the protocol objects of `websockets`: the server feeds it
decoded 16 kHz audio and recognition results with plain method calls, and each call returns
an `Output` holding the events to send and the requests to submit to the scheduler.

Partial/final policy:

* While an utterance is open, a partial of the whole utterance so far is requested every
  `partial_interval_s` of new audio, with at most one partial of the session outstanding, so
  the cadence adapts to the load (a busy scheduler answers later, so partials come less often).
* A partial's `stable` part only grows (LocalAgreement-2, `stream.stability`).
* When the utterance ends, one final is requested for it, padded by `pad_ms` on both sides
  (not on a side that was cut for length). Finals are released in utterance order.
* Early finals: the final's audio is complete `pad_ms` into a pause, long before the pause is
  long enough (`min_silence_ms`) to end the utterance. So at that moment the session already
  requests the final of the utterance as it would end there (`early_finals`). If the pause does
  end the utterance, at the same sample, that request is its final and the VAD's wait overlaps
  the decoding; if speech resumes, its result is shown as a partial.
* An utterance whose final text is empty (noise the VAD took for speech, or output the engine
  judged to be no speech) still gets its `final`, with empty text, so every `speech_started`
  is closed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from stream.events import Final, Partial, ServerEvent, SpeechStarted, SpeechStopped, Word, utterance_id
from stream.interfaces import SAMPLE_RATE, AsrInput, AsrOutput, Audio, RequestKind, VadStream
from stream.scheduler import Request
from stream.segmenter import Segmenter, SegmenterConfig, SpeechEnd, SpeechStart
from stream.stability import LocalAgreement

__all__ = [
    "AsrJob",
    "Output",
    "SampleBuffer",
    "Session",
    "SessionConfig",
]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The partial/final policy of a session."""

    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    partials: bool = True
    partial_interval_s: float = 0.6
    """Audio between two partial requests of one utterance (at least)."""
    partial_interval_ratio: float = 0.15
    """...and at least this fraction of the utterance so far: a partial re-reads the whole
    utterance, so its cost grows with it; spacing partials in proportion keeps a long
    utterance's partial compute per second constant."""
    partial_min_s: float = 0.4
    """No partial for an utterance shorter than this."""
    task: Literal["transcribe", "translate"] = "transcribe"
    early_finals: bool = True
    """Request an utterance's final `pad_ms` into each pause, before the pause ends it."""
    turn_detection: Literal["vad", "manual"] = "vad"
    """vad: utterances end at pauses; manual: every frame counts as speech and only `commit()`
    (or the length limit) ends an utterance — clients that decide turns themselves."""


@dataclass(frozen=True, slots=True)
class AsrJob:
    """What the session asked the recogniser, and for which utterance."""

    input: AsrInput
    seq: int
    kind: RequestKind
    end_sample: int


@dataclass(slots=True)
class Output:
    """What one call into a session produced."""

    events: list[ServerEvent] = field(default_factory=list)
    requests: list[Request[AsrJob]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.events.extend(other.events)
        self.requests.extend(other.requests)


class SampleBuffer:
    """The recent audio of a stream, addressed by absolute sample index."""

    def __init__(self, capacity: int = SAMPLE_RATE * 30) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self.start = 0
        """Absolute index of the oldest sample kept."""
        self.end = 0
        """Absolute index one past the newest sample."""

    def append(self, samples: Audio) -> None:
        n = len(samples)
        used = self.end - self.start
        if used + n > len(self._data):
            grown = np.zeros(max(2 * len(self._data), used + n), dtype=np.float32)
            grown[:used] = self._data[:used]
            self._data = grown
        self._data[used : used + n] = samples
        self.end += n

    def slice(self, start: int, end: int) -> Audio:
        start, end = max(start, self.start), min(end, self.end)
        return self._data[start - self.start : max(start, end) - self.start].copy()

    def drop_before(self, index: int) -> None:
        """Forget samples before `index`."""
        cut = min(max(index, self.start), self.end) - self.start
        if cut <= 0:
            return
        used = self.end - self.start
        self._data[: used - cut] = self._data[cut:used]
        self.start += cut


@dataclass(slots=True)
class _Utterance:
    seq: int
    start: int
    pad_start: bool = True
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    last_partial_end: int = 0
    language_hint: str | None = None
    early_end: int | None = None
    """Where the utterance would end at its latest pause, if an early final was requested there
    (an earlier pause can no longer end it: speech resumed after it)."""
    early_result: AsrOutput | None = None
    """That early final's result, once it came."""


class Session:
    """The state of one live audio stream of a conversation."""

    def __init__(
        self,
        session_id: str,
        conversation_id: str,
        vad: VadStream,
        *,
        language: str | None,
        config: SessionConfig | None = None,
        seqs: Iterator[int] | None = None,
        time_offset: float = 0.0,
        track: str | None = None,
        prompt: str | None = None,
        word_timestamps: bool = False,
    ) -> None:
        self.session_id = session_id
        self.conversation_id = conversation_id
        self.language = language
        self.prompt = prompt
        """Given to the recogniser with every request, partial and final (`stream.vocabulary`)."""
        self.word_timestamps = word_timestamps
        """Ask the recogniser for the words' times of finals (never of partials)."""
        self.config = config or SessionConfig()
        self.track = track
        self.time_offset = time_offset
        self._vad = vad
        self._segmenter = Segmenter(self.config.segmenter, vad.frame_samples, SAMPLE_RATE)
        self._pad = round(self.config.segmenter.pad_ms * SAMPLE_RATE / 1000)
        self._buffer = SampleBuffer()
        self._frame_pos = 0
        """Absolute index of the next sample the VAD has not seen."""
        self._seqs = seqs if seqs is not None else itertools.count()
        """Utterance positions in the conversation; shared by the sessions (tracks) of one conversation."""
        self._open: _Utterance | None = None
        self._partial_outstanding = False
        self._awaiting: list[int] = []
        """Seqs whose final was requested, in order; finals are released from the front."""
        self._finals: dict[int, Final] = {}
        self._bounds: dict[int, tuple[int, int, int]] = {}
        """seq → (first sample of its audio, with the padding; its start; its end), until its final."""
        self._last_cut = -1
        """Sample where the last utterance was cut for length (the next one starts there, unpadded)."""
        self.stopped = False
        self.utterances = 0

    # --- inputs ---------------------------------------------------------------------------

    def feed(self, samples: Audio) -> Output:
        """Take decoded 16 kHz mono audio; run the VAD over every complete frame."""
        out = Output()
        if self.stopped or len(samples) == 0:
            return out
        self._buffer.append(samples)
        frame = self._vad.frame_samples
        while self._buffer.end - self._frame_pos >= frame:
            chunk = self._buffer.slice(self._frame_pos, self._frame_pos + frame)
            self._frame_pos += frame
            manual = self.config.turn_detection == "manual"
            probability = 1.0 if manual else self._vad.probability(chunk)
            for seg in self._segmenter.push(probability):
                out.extend(self._on_segment(seg))
            if self._open is not None:
                out.extend(self._maybe_early_final())
                out.extend(self._maybe_partial())
        self._trim()
        return out

    def stop(self) -> Output:
        """End of audio: close the open utterance; finals still pending arrive later."""
        out = Output()
        if self.stopped:
            return out
        self.stopped = True
        for seg in self._segmenter.finish():
            out.extend(self._on_segment(seg))
        return out

    def commit(self) -> Output:
        """End the open utterance now (the client says its turn is over)."""
        out = Output()
        for seg in self._segmenter.finish():
            out.extend(self._on_segment(seg))
        return out

    def clear(self) -> Output:
        """Forget the open utterance without transcribing it."""
        self._segmenter.finish()
        if self._open is not None:
            self._open = None
            self._partial_outstanding = False
        return Output()

    def on_result(self, job: AsrJob, result: AsrOutput) -> Output:
        """Take the recogniser's answer to one of this session's requests."""
        if job.kind == "partial":
            self._partial_outstanding = False
            return self._on_partial(job, result)
        bounds = self._bounds.get(job.seq)
        if bounds is None or bounds[2] != job.end_sample:
            # An early final whose pause did not end the utterance (or not yet).
            utt = self._open
            if utt is not None and utt.seq == job.seq and job.end_sample == utt.early_end:
                utt.early_result = result
            return self._on_partial(job, result) if self.config.partials else Output()
        return Output(events=self._take_final(job.seq, result))

    def _take_final(self, seq: int, result: AsrOutput) -> list[ServerEvent]:
        begin, start, end = self._bounds.pop(seq)
        text = result.text.strip()
        # None: nothing heard to detect a language in (an `auto` session's empty final says no
        # language, even when the recogniser ranked one for the noise it judged silent).
        language = (result.language or None) if text or self.language is not None else None
        self._finals[seq] = Final(
            utterance_id=self.utterance_id(seq),
            text=text,
            start=self._seconds(start),
            end=self._seconds(end),
            language=language,
            seq=seq,
            track=self.track,
            words=self._conversation_words(result.words, begin, start, end) if self.word_timestamps else None,
        )
        return list(self._release_finals())

    def _conversation_words(self, words: tuple[Word, ...] | None, begin: int, start: int,
                            end: int) -> tuple[Word, ...]:
        """An engine's words (seconds of the audio from sample `begin`) in conversation seconds,
        kept inside the utterance (`start`-`end` samples)."""
        low, high = self._seconds(start), self._seconds(end)
        return tuple(
            replace(w, start=min(max(self._seconds(begin) + w.start, low), high),
                    end=min(max(self._seconds(begin) + w.end, low), high))
            for w in words or ()
        )

    def on_dropped(self, job: AsrJob) -> Output:
        """The scheduler dropped one of this session's partial requests (replaced or stale)."""
        if job.kind == "partial":
            self._partial_outstanding = False
        return Output()

    # --- state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Stopped, and every final has been released."""
        return self.stopped and self._open is None and not self._awaiting

    @property
    def speaking(self) -> bool:
        return self._open is not None

    @property
    def pending_finals(self) -> int:
        return len(self._awaiting)

    def utterance_id(self, seq: int) -> str:
        return utterance_id(self.conversation_id, seq)

    # --- internals ------------------------------------------------------------------------

    def _seconds(self, sample: int) -> float:
        return self.time_offset + sample / SAMPLE_RATE

    def _on_segment(self, seg: SpeechStart | SpeechEnd) -> Output:
        out = Output()
        if isinstance(seg, SpeechStart):
            self._open = _Utterance(
                seq=next(self._seqs), start=seg.sample, pad_start=seg.sample != self._last_cut
            )
            self._open.last_partial_end = seg.sample
            out.events.append(SpeechStarted(self.utterance_id(self._open.seq), self._seconds(seg.sample)))
            return out
        utt = self._open
        if utt is None:
            return out
        self._open = None
        self.utterances += 1
        self._last_cut = seg.sample if seg.forced else -1
        begin = utt.start - (self._pad if utt.pad_start else 0)
        stop = seg.sample + (0 if seg.forced else self._pad)
        audio = self._buffer.slice(begin, stop)
        self._bounds[utt.seq] = (begin, utt.start, seg.sample)
        self._awaiting.append(utt.seq)
        out.events.append(SpeechStopped(self.utterance_id(utt.seq), self._seconds(seg.sample)))
        if not seg.forced and seg.sample == utt.early_end:
            # Its early final is (or will be) the final: same audio, no second request.
            if utt.early_result is not None:
                out.events.extend(self._take_final(utt.seq, utt.early_result))
            return out
        asked = AsrInput(audio, self.language, self.config.task, self.prompt, self.word_timestamps)
        job = AsrJob(asked, utt.seq, "final", seg.sample)
        out.requests.append(self._request(job))
        return out

    def _maybe_early_final(self) -> Output:
        utt = self._open
        pause = self._segmenter.pause_start
        if utt is None or pause is None or not self.config.early_finals or pause == utt.early_end:
            return Output()
        if self._frame_pos - pause < self._pad:
            return Output()
        utt.early_end, utt.early_result = pause, None
        begin = utt.start - (self._pad if utt.pad_start else 0)
        audio = self._buffer.slice(begin, pause + self._pad)
        asked = AsrInput(audio, self.language, self.config.task, self.prompt, self.word_timestamps)
        job = AsrJob(asked, utt.seq, "final", pause)
        return Output(requests=[self._request(job)])

    def _maybe_partial(self) -> Output:
        utt = self._open
        cfg = self.config
        if utt is None or not cfg.partials or self._partial_outstanding:
            return Output()
        if utt.early_end is not None and utt.early_result is None:
            return Output()  # an early final is on its way: it will be shown as a partial
        now = self._frame_pos
        interval = max(cfg.partial_interval_s * SAMPLE_RATE, cfg.partial_interval_ratio * (now - utt.start))
        if now - utt.last_partial_end < interval:
            return Output()
        if now - utt.start < cfg.partial_min_s * SAMPLE_RATE:
            return Output()
        utt.last_partial_end = now
        self._partial_outstanding = True
        begin = utt.start - (self._pad if utt.pad_start else 0)
        audio = self._buffer.slice(begin, now)
        language = self.language or utt.language_hint
        job = AsrJob(AsrInput(audio, language, cfg.task, self.prompt), utt.seq, "partial", now)
        return Output(requests=[self._request(job)])

    def _on_partial(self, job: AsrJob, result: AsrOutput) -> Output:
        utt = self._open
        if utt is None or utt.seq != job.seq or not result.text.strip():
            return Output()
        if self.language is None and result.language_probability >= 0.8:
            utt.language_hint = result.language
        shown = utt.agreement.update(result.text)
        event = Partial(
            utterance_id=self.utterance_id(utt.seq),
            text=shown.text,
            stable=shown.stable,
            unstable=shown.unstable,
            start=self._seconds(utt.start),
            end=self._seconds(job.end_sample),
        )
        return Output(events=[event])

    def _release_finals(self) -> list[Final]:
        released = []
        while self._awaiting and self._awaiting[0] in self._finals:
            released.append(self._finals.pop(self._awaiting.pop(0)))
        return released

    def _request(self, job: AsrJob) -> Request[AsrJob]:
        return Request(
            session_id=self.session_id,
            kind=job.kind,
            key=(job.input.language, job.input.task),
            seconds=len(job.input.audio) / SAMPLE_RATE,
            payload=job,
        )

    def _trim(self) -> None:
        """Keep only the audio an open or future utterance may still need."""
        keep_from = self._frame_pos - self._pad - self._vad.frame_samples * 8
        if self._open is not None:
            keep_from = min(keep_from, self._open.start - self._pad)
        self._buffer.drop_before(keep_from)
