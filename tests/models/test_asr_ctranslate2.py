"""The CTranslate2 Whisper engine on real models and espeak-ng speech (CPU, int8, 2 threads)."""

from __future__ import annotations

import threading

import jiwer
import numpy as np
import pytest

from bench.common import load_references
from models import asr_ctranslate2
from models.asr_ctranslate2 import (
    CTranslate2Whisper,
    compression_ratio,
    first_saying,
    most_probable_language,
    repeats_at_end,
    without_looped_tail,
)
from models.registry import load_asr
from stream.interfaces import SAMPLE_RATE, AsrInput, AsrOutput
from tests.requirements import shared_audio_dir

from .conftest import Speak, words

REPORT = "please send me the quarterly report before the meeting on friday"
FOX = "the quick brown fox jumps over the lazy dog"
FRENCH = ("Bonjour à tous. Aujourd'hui, nous allons parler du budget de l'année prochaine, "
          "et je voudrais que chacun donne son avis.")


def wer(reference: str, output: AsrOutput) -> float:
    return float(jiwer.wer(words(reference), words(output.text)))


@pytest.mark.slow
def test_engine_attributes(tiny_en: CTranslate2Whisper, base: CTranslate2Whisper) -> None:
    assert (tiny_en.name, tiny_en.device, tiny_en.concurrency) == ("tiny.en", "cpu", 1)
    assert not tiny_en.multilingual
    assert (base.name, base.multilingual) == ("base", True)
    assert tiny_en.supported_languages == ("en",)
    assert "fr" in base.supported_languages
    assert tiny_en.transcribe_batch([]) == []


@pytest.mark.slow
def test_tiny_en_transcribes_english(tiny_en: CTranslate2Whisper, speak: Speak) -> None:
    [out] = tiny_en.transcribe_batch([AsrInput(audio=speak(REPORT), language=None)])
    assert wer(REPORT, out) < 0.3, out
    assert out.language == "en" and not out.fallback


@pytest.mark.slow
@pytest.mark.real_speech
def test_base_transcribes_real_english_speech(base: CTranslate2Whisper) -> None:
    """jfk.flac, a real recording: base gets it word for word. (On espeak-ng's fox sentence its
    int8 output depends on the CPU's instruction set: right on one 2-core VM, "jump, so ver ver
    lazy dog" on another; real speech does not sit on such an edge.)"""
    (jfk,) = load_references(shared_audio_dir(), ["jfk.flac"])
    [out] = base.transcribe_batch([AsrInput(audio=jfk.samples, language="en")])
    assert wer(jfk.text, out) < 0.1, out
    assert out.language == "en"


@pytest.mark.slow
def test_base_detects_french(base: CTranslate2Whisper, speak: Speak) -> None:
    [out] = base.transcribe_batch([AsrInput(audio=speak(FRENCH, voice="fr"), language=None)])
    assert out.language == "fr", out
    assert 0 < out.language_probability < 1
    assert "budget" in out.text.lower()


@pytest.mark.slow
def test_a_batch_mixes_languages_tasks_and_prompts(base: CTranslate2Whisper, speak: Speak) -> None:
    inputs = [
        AsrInput(audio=speak(REPORT), language=None, prompt="Let us start."),
        AsrInput(audio=speak(FRENCH, voice="fr"), language=None),
        AsrInput(audio=speak(FOX), language="en", prompt="We talked about animals and the budget yesterday."),
        AsrInput(audio=speak(FRENCH, voice="fr"), language="fr", task="translate"),
    ]
    outs = base.transcribe_batch(inputs)
    assert [o.language for o in outs] == ["en", "fr", "en", "fr"]
    assert wer(REPORT, outs[0]) < 0.3 and wer(FOX, outs[2]) < 0.3
    assert "budget" in outs[1].text.lower()
    assert "hello" in outs[3].text.lower(), outs[3]  # translated to English


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["digital zero", "low noise"])
def test_silence_gives_empty_text(tiny_en: CTranslate2Whisper, base: CTranslate2Whisper, kind: str) -> None:
    samples = 5 * SAMPLE_RATE
    audio = (np.zeros(samples, dtype=np.float32) if kind == "digital zero"
             else (np.random.default_rng(0).standard_normal(samples) * 0.003).astype(np.float32))
    for engine in (tiny_en, base):
        [out] = engine.transcribe_batch([AsrInput(audio=audio, language=None)])
        assert out.text == "", (engine.name, out)


@pytest.mark.slow
def test_a_batch_matches_single_calls_in_order(tiny_en: CTranslate2Whisper, speak: Speak) -> None:
    texts = ["good morning", REPORT,
             "we will review the budget and then discuss the new hiring plan for the engineering team"]
    inputs = [AsrInput(audio=speak(t), language="en") for t in texts]
    singles = [tiny_en.transcribe_batch([x])[0] for x in inputs]
    batch = tiny_en.transcribe_batch(inputs)
    assert len(batch) == 3
    assert [words(o.text) for o in batch] == [words(o.text) for o in singles]
    assert wer(texts[2], batch[2]) < 0.3


@pytest.mark.slow
def test_a_decode_that_runs_out_of_tokens_stops_there_and_is_not_redone(
        tiny_en: CTranslate2Whisper, speak: Speak, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asr_ctranslate2, "TOKENS_PER_SECOND", 0.0)  # budget: 10 tokens, too few
    [out] = tiny_en.transcribe_batch([AsrInput(audio=speak(REPORT), language="en")])
    assert out.fallback
    said = words(out.text).split()
    assert 0 < len(said) <= 10 and said == words(REPORT).split()[: len(said)], out


@pytest.mark.slow
def test_long_input_is_cut_to_30_seconds(tiny_en: CTranslate2Whisper, speak: Speak) -> None:
    speech = speak(REPORT)
    audio = np.concatenate([np.zeros(29 * SAMPLE_RATE, np.float32), speech])  # speech starts at 29 s
    [out] = tiny_en.transcribe_batch([AsrInput(audio=audio, language="en")])
    assert "friday" not in out.text.lower()


@pytest.mark.slow
def test_concurrent_calls_from_two_threads(speak: Speak) -> None:
    engine = load_asr("tiny.en", device="cpu", cpu_threads=1, num_workers=2)
    assert engine.concurrency == 2
    engine.warmup()
    inputs = [AsrInput(audio=speak(REPORT), language="en")]
    expected = engine.transcribe_batch(inputs)
    results: list[list[AsrOutput]] = []
    def call() -> None:
        results.append(engine.transcribe_batch(inputs))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected, expected]


def test_repetition_detectors() -> None:
    assert repeats_at_end("At that high level the air is pure. At that high level")
    assert repeats_at_end("A thin stripe runs down the middle. A thin stripe runs")
    assert repeats_at_end("which in print which in print")
    assert not repeats_at_end("And so my fellow Americans, ask not what your country can do for you, "
                              "ask what you can do for your country.")
    assert not repeats_at_end("no no no")
    assert compression_ratio("noi, " * 60) > 2.4
    assert compression_ratio("Please send me the quarterly report before the meeting on Friday.") < 2.4
    assert compression_ratio("") == 0.0


def test_a_loop_at_the_end_of_a_decode_is_cut_after_its_first_saying() -> None:
    looped = "Je vous en crois reconnard du dramelle au bout de l'eau" + " l'eau" * 50
    assert without_looped_tail(looped) == "Je vous en crois reconnard du dramelle au bout de l'eau"
    assert without_looped_tail("We agreed. " + "The budget is fine. " * 5) == "We agreed. The budget is fine."
    assert without_looped_tail("no no no") == "no no no"  # three sayings may be real speech
    assert without_looped_tail("We met on Monday. We met again on Tuesday.") == (
        "We met on Monday. We met again on Tuesday.")


def test_first_saying_cuts_a_phrase_repeated_over_and_over() -> None:
    once = "And so my fellow Americans."
    assert first_saying(f"{once} {once}") == once
    assert first_saying("And so am I fellow Americans. And so am I fellow Americans. And so am") == (
        "And so am I fellow Americans.")
    assert first_saying("thank you, thank you") == "thank you,"
    assert first_saying("no no no") is None  # a one-word period may be real
    assert first_saying("At that high level the air is pure. At that high level") is None  # not whole
    assert first_saying("We met on Monday. We met again on Tuesday.") is None
    assert first_saying("") is None
    cut_short = "Nous devons réduire les tours. Nous devons réduire les tours. Nous dev"
    assert first_saying(cut_short) == "Nous devons réduire les tours."  # the budget cut the last word
    assert first_saying("thank you, thank you, thank yo") == "thank you,"
    assert first_saying("thank you, thank you, thank me") is None


NAMES = ("Our competitor Zyphrex opened an office in Lyon, and Kessandra Vollmer will lead "
         "the Palabre rollout.")


def test_a_vocabulary_prompt_writes_the_names_in_a_batch_of_other_prompts(
    tiny_en: CTranslate2Whisper, speak: Speak
) -> None:
    # Measured (bench/vocabulary.py): without the prompt tiny.en hears none of these names.
    vocabulary = AsrInput(audio=speak(NAMES), language="en", prompt="Zyphrex, Kessandra Vollmer, Palabre")
    alone = tiny_en.transcribe_batch([vocabulary])[0]
    batch = tiny_en.transcribe_batch([
        AsrInput(audio=speak(REPORT), language="en", prompt="Quarterly."),
        vocabulary,
        AsrInput(audio=speak(FOX), language="en"),
    ])
    assert "Kessandra Vollmer" in alone.text and "Palabre" in alone.text, alone
    assert batch[1].text == alone.text  # its whole prompt, though the others' are shorter
    assert wer(REPORT, batch[0]) < 0.3


@pytest.mark.slow
def test_word_timestamps_time_each_word_in_order(tiny_en: CTranslate2Whisper, speak: Speak) -> None:
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    speech = speak(REPORT)
    audio = np.concatenate([silence, speech])  # the words start after one second of silence
    asked, plain = tiny_en.transcribe_batch([AsrInput(audio=audio, language="en", word_timestamps=True),
                                             AsrInput(audio=audio, language="en")])
    assert plain.words is None
    assert asked.words, asked
    assert "".join(w.word for w in asked.words) == asked.text
    assert all(w.word.strip() for w in asked.words)
    assert all(0.0 <= w.start <= w.end <= len(audio) / SAMPLE_RATE for w in asked.words)
    starts = [w.start for w in asked.words]
    assert starts == sorted(starts)
    assert asked.words[0].start >= 0.7, asked.words  # not in the leading silence
    assert asked.words[-1].end > len(audio) / SAMPLE_RATE - 1.5
    assert all(0.0 <= w.probability <= 1.0 for w in asked.words)
RANKING = [("<|he|>", 0.40), ("<|es|>", 0.25), ("<|fr|>", 0.20), ("<|en|>", 0.05), ("<|de|>", 0.10)]


def test_detection_takes_the_most_probable_of_the_deployment_languages() -> None:
    language, probability = most_probable_language(RANKING, ("en", "fr"))
    assert language == "fr" and probability == pytest.approx(0.20 / 0.25)
    assert most_probable_language(RANKING) == ("he", 0.40)  # no restriction: Whisper's first
    assert most_probable_language(RANKING, ("en",)) == ("en", 1.0)
    assert most_probable_language(RANKING, ("xx",)) == ("he", 0.40)  # none ranked: Whisper's first


class _HebrewFirst:
    """The real model, except that detection ranks Hebrew and Spanish above the rest (as `base` does
    on some real French speech)."""

    def __init__(self, model: object) -> None:
        self._model = model

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def detect_language(self, encoded: object) -> list[list[tuple[str, float]]]:
        found = self._model.detect_language(encoded)  # type: ignore[attr-defined]
        return [[("<|he|>", 0.5), ("<|es|>", 0.3), *[(t, p * 0.2) for t, p in ranked]] for ranked in found]


@pytest.mark.slow
def test_auto_decodes_in_the_most_probable_deployment_language(
        base: CTranslate2Whisper, speak: Speak, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "model", _HebrewFirst(base.model))
    monkeypatch.setattr(base, "auto_languages", ("en", "fr"))
    [out] = base.transcribe_batch([AsrInput(audio=speak(FRENCH, voice="fr"), language=None)])
    assert out.language == "fr", out
    assert "budget" in out.text.lower()
    [silent] = base.transcribe_batch([AsrInput(audio=np.zeros(SAMPLE_RATE, np.float32), language=None)])
    assert (silent.text, silent.language) == ("", "")  # nothing heard: no language (null in events)


def test_unknown_auto_languages_are_refused() -> None:
    from models.whisper_files import resolve_model

    with pytest.raises(ValueError, match="xx not a language Whisper knows"):
        CTranslate2Whisper(resolve_model("tiny.en").path, auto_languages=("en", "xx"))
