"""Whisper on CTranslate2 (CPU or CUDA), length-aware: the cost follows the speech, not a 30 s window.

faster-whisper's `WhisperModel.transcribe` always encodes a full 30 s window. Here each batch is
padded with silence only to its longest input plus `pad_seconds` (5 s by default), which keeps the
accuracy of the full window at a fraction of the encoder cost (measured by bench/asr_padding.py).
A short window can make the decoder repeat itself past the end of the speech; a guard detects that
(repeated words at the end, a high compression ratio, or a decode that ran out of tokens) and cuts
the text, at no cost: a text that is one phrase said over and over ("And so my fellow Americans. And
so my fellow Americans. And so") is cut to its first saying, a text ending in a phrase said four
times or more keeps what came before and one saying. Nothing is re-decoded: the token budget
follows the speech (`TOKENS_PER_SECOND` per second + `EXTRA_TOKENS`, room for French, whose words
take more tokens than English ones), so a looping decode stops early. Re-decoding suspects in the
full 30 s window, as this engine once did, cost `base` on CPU 4-5 times a first decode (about 2 s
of CPU for a 1.5-3 s partial) and, on the synthetic French of bench/capacity.py, did not read it
better; bench/asr_guard.py measures both.

The pipeline, in `CTranslate2Whisper.transcribe_batch`:
    audio → (digital silence is answered empty, not decoded)
          → log-mel features (batch padded to one length) → encoder (once)
          → language detection on the encoder output (multilingual models, language=None),
            the most probable of `auto_languages` (the languages the deployment serves)
          → greedy decoding, one `generate` call per (language, task, prompt length in tokens)
          → repetition guard (cut a repeated phrase or a looped tail) → non-speech rule
"""

from __future__ import annotations

import dataclasses
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer

from stream.events import Word
from stream.interfaces import SAMPLE_RATE, AsrInput, AsrOutput, Audio

__all__ = [
    "COMPRESSION_RATIO_THRESHOLD",
    "EXTRA_TOKENS",
    "HOP_SAMPLES",
    "LOG_PROB_THRESHOLD",
    "MAX_DECODER_POSITIONS",
    "MAX_PREVIOUS_TOKENS",
    "NO_SPEECH_THRESHOLD",
    "REPEATED_NGRAM",
    "SILENCE_PEAK",
    "TOKENS_PER_SECOND",
    "WINDOW_SAMPLES",
    "CTranslate2Whisper",
    "Features",
    "compression_ratio",
    "first_saying",
    "most_probable_language",
    "repeats_at_end",
]

WINDOW_SAMPLES = 30 * SAMPLE_RATE
"""Whisper's full input window (30 s); longer inputs are cut to it."""
HOP_SAMPLES = 160
"""Samples per log-mel frame; the encoder halves the frame count, so windows are multiples of 320."""
MAX_DECODER_POSITIONS = 448
"""Whisper's text context (prompt + generated tokens)."""
MAX_PREVIOUS_TOKENS = MAX_DECODER_POSITIONS // 2 - 1
"""At most this many tokens of previous text are given as a prompt (faster-whisper's limit)."""
TOKENS_PER_SECOND = 10.0
EXTRA_TOKENS = 10
"""Decoding budget: `TOKENS_PER_SECOND` per second of speech + `EXTRA_TOKENS`; hitting it counts as a
loop. Read speech takes about 3-4 tokens a second in English, 5-6 in French (bench/asr_guard.py)."""
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
"""faster-whisper's non-speech rule: both exceeded means the text is a hallucination on silence."""
COMPRESSION_RATIO_THRESHOLD = 2.4
REPEATED_NGRAM = 3
"""The last this-many words occurring earlier in the text marks a decoder loop."""
LOOP_REPEATS = 4
"""A phrase said this many times in a row at the end of a looped decode is cut (`without_looped_tail`)."""
SILENCE_PEAK = 10 ** (-60 / 20)
"""Inputs whose peak stays below -60 dBFS are returned empty without decoding."""
ALIGNMENT_STEP_S = 2 * HOP_SAMPLES / SAMPLE_RATE
"""Seconds per encoder position, the unit of the cross-attention alignment (20 ms)."""

Features = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """One `generate` result, read."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    hit_max_length: bool
    words: tuple[Word, ...] | None = None

    @property
    def is_silence(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD

    @property
    def looks_looped(self) -> bool:
        return (self.hit_max_length or compression_ratio(self.text) > COMPRESSION_RATIO_THRESHOLD
                or repeats_at_end(self.text))


_SILENCE = _Decoded(text="", avg_logprob=0.0, no_speech_prob=1.0, hit_max_length=False)


class CTranslate2Whisper:
    """A Whisper `AsrEngine` on CTranslate2, for CPU and CUDA alike (the device is an argument).

    Safe to call from `concurrency` threads at once: CTranslate2 runs up to `num_workers` calls in
    parallel, and everything else here is read-only after construction.
    """

    def __init__(self, model_path: str | Path, *, name: str | None = None, device: str = "cpu",
                 compute_type: str = "int8", cpu_threads: int = 0, num_workers: int = 1,
                 pad_seconds: float = 5.0, beam_size: int = 1,
                 auto_languages: Sequence[str] = ()) -> None:
        """Load the CTranslate2 Whisper directory `model_path`.

        `cpu_threads` is CTranslate2's `intra_threads` (0: its default), `num_workers` its
        `inter_threads` (the number of concurrent calls). `pad_seconds` of silence are added after
        the longest input of a batch (capped at 30 s in all); `beam_size` 1 is greedy decoding.
        `auto_languages` restricts language detection (inputs with no language) to those codes: the
        most probable of them is decoded, its probability renormalised among them; empty: any
        language Whisper knows. ValueError for a code Whisper does not know.
        """
        unknown = [code for code in auto_languages if code not in _LANGUAGE_CODES]
        if unknown:
            raise ValueError(f"auto_languages: {', '.join(unknown)} not a language Whisper knows (en, fr)")
        path = Path(model_path)
        self.model = ctranslate2.models.Whisper(str(path), device=device, compute_type=compute_type,
                                                intra_threads=cpu_threads, inter_threads=num_workers)
        self.name = name or path.name
        self.device = device
        self.compute_type = compute_type
        self.multilingual: bool = bool(self.model.is_multilingual)
        self.concurrency = num_workers
        self.pad_seconds = pad_seconds
        self.beam_size = beam_size
        self.supported_languages: tuple[str, ...] = tuple(_LANGUAGE_CODES) if self.multilingual else ("en",)
        self.auto_languages: tuple[str, ...] = tuple(auto_languages)
        self._features = FeatureExtractor(feature_size=self.model.n_mels)
        self._hf_tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizers: dict[tuple[str, str], Tokenizer] = {}
        self._lock = threading.Lock()

    def warmup(self) -> None:
        """Run one short decode (with language detection if multilingual) so the first request is fast."""
        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
        self.transcribe_batch([AsrInput(audio=tone, language=None)])

    def transcribe_batch(self, inputs: Sequence[AsrInput]) -> list[AsrOutput]:
        """Transcribe `inputs` together; one output per input, in order.

        Digital silence (peak below -60 dBFS) is not decoded: its text is empty and its language the
        one asked for, or "" when none was. Raises ValueError for a language the model does not know
        (see `supported_languages`).
        """
        audios = [np.asarray(x.audio, dtype=np.float32).reshape(-1)[:WINDOW_SAMPLES] for x in inputs]
        audible = [i for i, a in enumerate(audios) if a.size and float(np.abs(a).max()) >= SILENCE_PEAK]
        languages: dict[int, tuple[str, float]] = {}
        decoded: dict[int, _Decoded] = {}
        guarded: set[int] = set()
        if audible:
            longest = max(len(audios[i]) for i in audible)
            window = min(WINDOW_SAMPLES, longest + round(self.pad_seconds * SAMPLE_RATE))
            decoded = self._decode(inputs, audios, audible, window, languages)
            for i in audible:  # the repetition guard: cut a decode that looped, never re-decode it
                if decoded[i].looks_looped and not decoded[i].is_silence:
                    decoded[i] = _guarded(decoded[i])
                    guarded.add(i)

        outputs = []
        for i, x in enumerate(inputs):
            d = decoded.get(i, _SILENCE)
            language, probability = languages.get(i, (x.language or ("" if self.multilingual else "en"), 1.0))
            outputs.append(AsrOutput(text="" if d.is_silence else d.text, language=language,
                                     language_probability=probability, no_speech_probability=d.no_speech_prob,
                                     avg_logprob=d.avg_logprob, fallback=i in guarded,
                                     words=(() if d.is_silence else d.words) if x.word_timestamps else None))
        return outputs

    def _decode(self, inputs: Sequence[AsrInput], audios: Sequence[Audio], rows: Sequence[int], window: int,
                languages: dict[int, tuple[str, float]]) -> dict[int, _Decoded]:
        """Encode inputs `rows` padded to `window` samples, detect missing languages (filling
        `languages`), then greedy-decode them: one `generate` call per (language, task, prompt length).

        CTranslate2 needs <|startoftranscript|> at the same position in every prompt of a call, so
        inputs whose prompts (vocabularies) have the same number of tokens decode together; the
        others share the encoder pass and decode in their own call, their prompts whole."""
        features = self._log_mel([audios[i] for i in rows], window)
        encoded = self.model.encode(ctranslate2.StorageView.from_array(features))
        position = {i: k for k, i in enumerate(rows)}

        for i in rows:
            if i not in languages and not self.multilingual:
                languages[i] = ("en", 1.0)  # an English-only model ignores the language asked for
            elif i not in languages and inputs[i].language:
                languages[i] = (str(inputs[i].language), 1.0)
        undetected = [i for i in rows if i not in languages]
        if undetected:
            rows_encoded = self._take(encoded, features, [position[i] for i in undetected])
            found = self.model.detect_language(rows_encoded)
            for i, ranked in zip(undetected, found, strict=True):
                languages[i] = most_probable_language(ranked, self.auto_languages)

        previous: dict[int, list[int]] = {}
        groups: dict[tuple[str, str, int], list[int]] = {}
        for i in rows:
            language = languages[i][0]
            task: str = inputs[i].task if self.multilingual else "transcribe"
            prompt_text = (inputs[i].prompt or "").strip()
            tokens = self._tokenizer(language, task).encode(" " + prompt_text) if prompt_text else []
            previous[i] = tokens[-MAX_PREVIOUS_TOKENS:]
            groups.setdefault((language, task, len(previous[i])), []).append(i)

        results: dict[int, _Decoded] = {}
        for (language, task, _), group in groups.items():
            tokenizer = self._tokenizer(language, task)
            prompts = [([tokenizer.sot_prev, *previous[i]] if previous[i] else [])
                       + [*tokenizer.sot_sequence, tokenizer.no_timestamps] for i in group]
            start_step = len(prompts[0]) - 1
            if window >= WINDOW_SAMPLES:
                budget = MAX_DECODER_POSITIONS // 2
            else:
                speech_seconds = max(len(audios[i]) for i in group) / SAMPLE_RATE
                budget = int(TOKENS_PER_SECOND * speech_seconds) + EXTRA_TOKENS
            budget = min(budget, MAX_DECODER_POSITIONS // 2, MAX_DECODER_POSITIONS - start_step)
            # CTranslate2 decodes at most min(max_length / 2, max_length - start_step) tokens.
            max_length = max(2 * budget, budget + start_step)
            found = self.model.generate(self._take(encoded, features, [position[i] for i in group]), prompts,
                                        beam_size=self.beam_size, max_length=max_length, suppress_blank=True,
                                        return_scores=True, return_no_speech_prob=True)
            texts = {i: result.sequences_ids[0] for i, result in zip(group, found, strict=True)
                     if inputs[i].word_timestamps and result.sequences_ids[0]}
            words_by_row = dict(zip(texts, self._align(
                self._take(encoded, features, [position[i] for i in texts]), tokenizer, list(texts.values()),
                [len(audios[i]) // HOP_SAMPLES for i in texts]), strict=True)) if texts else {}
            for i, result in zip(group, found, strict=True):
                tokens = result.sequences_ids[0]
                # As faster-whisper: recover the summed log-probability, average over tokens + end token.
                avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
                results[i] = _Decoded(text=tokenizer.decode(tokens).strip(), avg_logprob=float(avg_logprob),
                                      no_speech_prob=float(result.no_speech_prob),
                                      hit_max_length=len(tokens) >= budget,
                                      words=words_by_row.get(i, ()) if inputs[i].word_timestamps else None)
        return results

    def _align(self, encoded: ctranslate2.StorageView, tokenizer: Tokenizer, tokens: list[list[int]],
               frames: list[int]) -> list[tuple[Word, ...]]:
        """The words of each decoded token list with their times (seconds of its audio), from the
        decoder's cross-attention over `encoded` (`frames`: the log-mel frames of each audio)."""
        found = self.model.align(encoded, tokenizer.sot_sequence, tokens, frames)
        return [_words(tokenizer, text_tokens, result, frames[k] * HOP_SAMPLES / SAMPLE_RATE)
                for k, (text_tokens, result) in enumerate(zip(tokens, found, strict=True))]

    def _log_mel(self, audios: Sequence[Audio], window: int) -> Features:
        """Log-mel features of each audio padded with silence to `window` samples (rounded up to 320)."""
        window = min(WINDOW_SAMPLES, -(-window // (2 * HOP_SAMPLES)) * 2 * HOP_SAMPLES)
        frames = window // HOP_SAMPLES
        return np.stack([self._features(np.pad(a, (0, window - len(a))))[:, :frames] for a in audios])

    def _take(self, encoded: ctranslate2.StorageView, features: Features,
              positions: list[int]) -> ctranslate2.StorageView:
        """The encoder output of the batch rows at `positions` (re-encoded on GPU, where it is not sliced)."""
        if positions == list(range(features.shape[0])):
            return encoded
        if self.device == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[positions]))
        return self.model.encode(ctranslate2.StorageView.from_array(features[positions]))

    def _tokenizer(self, language: str, task: str) -> Tokenizer:
        key = (language, task)
        with self._lock:
            if key not in self._tokenizers:
                self._tokenizers[key] = Tokenizer(self._hf_tokenizer, self.multilingual, task=task,
                                                  language=language)
            return self._tokenizers[key]


def _words(tokenizer: Tokenizer, tokens: list[int], alignment: Any,
           duration: float) -> tuple[Word, ...]:
    """The words of `tokens` timed by `alignment`: a word starts where the alignment path reaches
    its first token and ends where it reaches the next word's; punctuation joins the word before."""
    names, groups = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    names, groups = names[:-1], groups[:-1]  # the end token only closes the last word
    path = np.asarray(alignment.alignments, dtype=np.int64).reshape(-1, 2)
    if not names or not len(path):
        return ()
    firsts = np.flatnonzero(np.diff(path[:, 0], prepend=-1) != 0)
    token_times = np.minimum(path[firsts, 1] * ALIGNMENT_STEP_S, duration)  # one per token reached
    probabilities = np.asarray(alignment.text_token_probs, dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    last = len(token_times) - 1
    words: list[Word] = []
    for k, name in enumerate(names):
        start = float(token_times[min(bounds[k], last)])
        end = float(token_times[min(bounds[k + 1], last)])
        probability = float(probabilities[bounds[k]:bounds[k + 1]].mean()) if len(probabilities) else 0.0
        if words and not any(c.isalnum() for c in name):
            before = words[-1]
            words[-1] = dataclasses.replace(before, word=before.word + name)
        else:
            words.append(Word(word=name, start=start, end=max(start, end), probability=probability))
    if not words:
        return ()
    words[0] = dataclasses.replace(words[0], word=words[0].word.lstrip())
    return _shorten_leading_words(words)


def _shorten_leading_words(words: list[Word]) -> tuple[Word, ...]:
    """The alignment stretches a word said after a silence (the first, or one after a sentence's
    end) back over that silence: such a word longer than twice the median word (at most 1.4 s)
    starts that long before its end."""
    durations = [w.end - w.start for w in words if w.end > w.start]
    longest = 2 * min(0.7, float(np.median(durations))) if durations else 0.0
    out = list(words)
    for k, w in enumerate(out):
        after_silence = k == 0 or out[k - 1].word.rstrip()[-1:] in ".!?"
        if after_silence and longest and w.end - w.start > longest:
            out[k] = dataclasses.replace(w, start=w.end - longest)
    return tuple(out)


def _guarded(decoded: _Decoded) -> _Decoded:
    """`decoded`, which looks looped, cut: to its first saying when it only repeats one phrase
    (`first_saying`), else after the first saying of a phrase repeated at its end
    (`without_looped_tail`); its words too. A text with neither is kept as it is."""
    once = first_saying(decoded.text)
    text = once if once is not None else without_looped_tail(decoded.text)
    if text == decoded.text:
        return decoded
    return dataclasses.replace(decoded, text=text, words=_words_within(decoded.words, text))


def _words_within(words: tuple[Word, ...] | None, text: str) -> tuple[Word, ...] | None:
    """The leading `words` whose concatenation fits in `text` (a decode cut to its first saying)."""
    if words is None:
        return None
    kept, length = [], 0
    for word in words:
        length += len(word.word)
        if length > len(text):
            break
        kept.append(word)
    return tuple(kept)
def most_probable_language(ranked: Sequence[tuple[str, float]],
                           among: Sequence[str] = ()) -> tuple[str, float]:
    """The most probable language of CTranslate2's `detect_language` ranking (`[("<|he|>", 0.4),
    ("<|fr|>", 0.3), ...]`, every language, most probable first) among the codes `among` (empty:
    any), with its probability renormalised among them: `("fr", 0.9)`. The first of the ranking
    when none of `among` appears in it."""
    codes = [(token[2:-2], float(probability)) for token, probability in ranked]
    kept = [(code, p) for code, p in codes if code in among] if among else codes
    if not kept:
        return codes[0]
    code, probability = kept[0]
    total = sum(p for _, p in kept)
    return code, (probability / total if among and total > 0 else probability)


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression (high means repetitive)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


_WORD = re.compile(r"\w+(?:'\w+)*")


def first_saying(text: str, min_words: int = 2) -> str | None:
    """The first saying of a phrase that `text` only repeats, or None when it is not such a loop.

    "And so my fellow Americans. And so my fellow Americans. And so" → "And so my fellow
    Americans." (case and punctuation ignored when comparing; at least two full sayings of at
    least `min_words` words). The last word may be cut short, as a decode stopped by its token
    budget leaves it ("... Nous devons réduire les tours. Nous dev"). "no no no" is not cut: a
    one-word period may be real speech.
    """
    matches = list(_WORD.finditer(text))
    words = [m.group().lower() for m in matches]
    for period in range(min_words, len(words) // 2 + 1):
        last = len(words) - 1
        if (all(words[i] == words[i % period] for i in range(period, last))
                and words[last % period].startswith(words[last])):
            end = matches[period - 1].end()
            while end < len(text) and not text[end].isspace():
                end += 1  # keep the punctuation that ends the phrase
            return text[:end].strip()
    return None


def without_looped_tail(text: str, min_repeats: int = LOOP_REPEATS) -> str:
    """`text` cut after the first saying of a phrase it repeats at least `min_repeats` times in a
    row at its end (case and punctuation ignored), else `text` itself.

    "au bout de l'eau l'eau l'eau l'eau l'eau" → "au bout de l'eau": a decode that still loops in
    the full window keeps what came before the loop. Three sayings ("no no no") are left alone.
    """
    matches = list(_WORD.finditer(text))
    words = [m.group().lower() for m in matches]
    for period in range(1, len(words) // min_repeats + 1):
        repeats = 1
        while (repeats + 1) * period <= len(words) and (
            words[len(words) - (repeats + 1) * period : len(words) - repeats * period] == words[-period:]
        ):
            repeats += 1
        if repeats >= min_repeats:
            end = matches[len(words) - repeats * period + period - 1].end()
            while end < len(text) and not text[end].isspace():
                end += 1  # keep the punctuation that ends the phrase
            return text[:end].strip()
    return text


def repeats_at_end(text: str, n: int = REPEATED_NGRAM) -> bool:
    """True when the last `n` words of `text` (case and punctuation ignored) also occur earlier in it."""
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return False
    tail = words[-n:]
    return any(words[i:i + n] == tail for i in range(len(words) - n))
