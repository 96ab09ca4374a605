"""The ASR lanes: which model serves which language, `auto`, bad languages, and routing requests."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from server.asr_lanes import AsrLane, AsrLanes, LanguageRoutes, UnsupportedLanguage
from server.config import ServerConfig, parse_language_models
from server.model_service import ModelService, submit_and_wait
from server.ray_services import ModelInfo
from server.settings import ConfigError, load_config
from stream.interfaces import AsrInput, AsrOutput
from stream.scheduler import Request, Scheduler, SchedulerConfig
from stream.session import AsrJob

WHISPER = frozenset({"en", "fr", "de", "es"})
DEFAULT = LanguageRoutes({"en": "tiny.en", "*": "base"}, {"tiny.en": False, "base": True}, WHISPER)


def test_each_language_goes_to_its_model_and_auto_to_the_multilingual_one() -> None:
    assert DEFAULT.model_for("en") == "tiny.en"
    assert DEFAULT.model_for("fr") == "base"
    assert DEFAULT.model_for("de") == "base"
    assert DEFAULT.model_for(None) == "base"
    assert DEFAULT.session_language("fr") == "fr"
    assert DEFAULT.session_language(None) is None  # detected per utterance
    assert DEFAULT.languages_of("base") == ["*"]


def test_auto_uses_a_multilingual_model_even_without_a_star_entry() -> None:
    routes = LanguageRoutes({"en": "tiny.en", "fr": "base"}, {"tiny.en": False, "base": True}, WHISPER)
    assert routes.auto_model == "base"
    assert routes.model_for(None) == "base"


def test_an_english_only_server_runs_auto_in_english() -> None:
    routes = LanguageRoutes({"*": "tiny.en"}, {"tiny.en": False}, WHISPER)
    assert routes.auto_model is None
    assert routes.session_language(None) == "en"
    assert routes.model_for(None) == "tiny.en"


def test_a_language_whisper_does_not_know_is_refused() -> None:
    with pytest.raises(UnsupportedLanguage, match="'xx' is not one Whisper knows"):
        DEFAULT.session_language("xx")


def test_a_language_no_model_serves_is_refused() -> None:
    routes = LanguageRoutes({"en": "tiny.en", "fr": "base"}, {"tiny.en": False, "base": True}, WHISPER)
    expected = "no model on this server serves language 'de' (asr_models: en=tiny.en, fr=base)"
    with pytest.raises(UnsupportedLanguage, match=re.escape(expected)):
        routes.session_language("de")


def test_a_language_on_an_english_only_model_is_refused() -> None:
    routes = LanguageRoutes({"*": "tiny.en"}, {"tiny.en": False}, WHISPER)
    with pytest.raises(UnsupportedLanguage, match=re.escape("model tiny.en serves 'fr' but is English-only")):
        routes.session_language("fr")


def test_language_models_come_from_model_or_asr_models() -> None:
    assert ServerConfig().language_models() == {"en": "tiny.en", "*": "base"}
    assert ServerConfig(model="base").language_models() == {"*": "base"}
    assert parse_language_models(("FR = base", "*=tiny.en")) == {"fr": "base", "*": "tiny.en"}
    for bad in (("fr",), ("fr=",), ("french=base",), ("fr=base", "fr=tiny.en"), ()):
        with pytest.raises(ValueError):
            parse_language_models(bad)


def test_asr_models_is_a_checked_key_in_every_form() -> None:
    config = load_config(None, {"PALABRE_ASR_MODELS": "en=tiny.en, fr=base"}, {})
    assert config.language_models() == {"en": "tiny.en", "fr": "base"}
    assert load_config(None, {}, {"asr_models": "*=base"}).language_models() == {"*": "base"}
    with pytest.raises(ConfigError, match=r"asr_models.*must be LANGUAGE=MODEL"):
        load_config(None, {}, {"asr_models": "french"})


def test_ray_serves_one_model_and_says_so() -> None:
    with pytest.raises(ConfigError, match="serves one model for every language: set model"):
        load_config(None, {}, {"ray_address": "local"})
    assert load_config(None, {}, {"ray_address": "local", "model": "base"}).model == "base"


def _lane(model: str, heard: list[str]) -> AsrLane:
    """A lane whose recogniser records which model heard each input."""

    def recognise(jobs: Sequence[AsrJob]) -> list[AsrOutput]:
        heard.extend(model for _ in jobs)
        return [AsrOutput(text=model, language=job.input.language or "fr") for job in jobs]

    scheduler = Scheduler[AsrJob](SchedulerConfig(max_wait_s=0))
    service = ModelService[AsrJob, AsrOutput]("asr", recognise, scheduler, 1)
    return AsrLane(model, ModelInfo(model, "cpu", multilingual=model == "base"), service)


def _request(session: str, language: str | None) -> Request[AsrJob]:
    job = AsrJob(AsrInput(np.zeros(1600, dtype=np.float32), language), 0, "final", 0)
    return Request(session_id=session, kind="final", key=(language, "transcribe"), seconds=0.1, payload=job)


async def test_requests_are_routed_to_the_lane_of_their_language() -> None:
    heard: list[str] = []
    lanes = AsrLanes(DEFAULT, [_lane("tiny.en", heard), _lane("base", heard)])
    lanes.start()
    try:
        english = await submit_and_wait("asr", lanes.submit, _request("a", "en"))
        french = await submit_and_wait("asr", lanes.submit, _request("b", "fr"))
        auto = await submit_and_wait("asr", lanes.submit, _request("c", None))
        assert (english.text, french.text) == ("tiny.en", "base")
        assert (auto.text, auto.language) == ("base", "fr")
        assert heard == ["tiny.en", "base", "base"]
        assert lanes.running and lanes.model_name == "tiny.en+base"
        assert lanes.describe() == [
            {"model": "tiny.en", "device": "cpu", "languages": ["en"]},
            {"model": "base", "device": "cpu", "languages": ["*", "auto"]},
        ]
    finally:
        await lanes.close()


def test_every_configured_model_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="no lane for model"):
        AsrLanes(DEFAULT, [_lane("tiny.en", [])])


def test_asr_auto_languages_is_a_checked_key() -> None:
    assert load_config(None, {}, {}).asr_auto_languages == ("en", "fr")
    assert load_config(None, {}, {"asr_auto_languages": "en,fr,de"}).asr_auto_languages == ("en", "fr", "de")
    with pytest.raises(ConfigError, match=r"asr_auto_languages.*must be language codes Whisper knows"):
        load_config(None, {}, {"asr_auto_languages": "en,klingon"})
