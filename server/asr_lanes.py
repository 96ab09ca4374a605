"""The ASR lanes: one Whisper model per language group, each with its own micro-batcher.

`ServerConfig.language_models()` says which model serves which language (`en` → `tiny.en`,
`*` → `base` by default; `--model X` is `*` → X). Each distinct model is one lane: its engine
and its own `BatchService` (its own `Scheduler` and workers), so English partials on `tiny.en`
never wait behind a French batch on `base`. `LanguageRoutes` is the pure rule (which lane serves
a language, which languages a session may ask for); `AsrLanes` routes each session's requests
to its lane and is what sessions see as `SessionServices.asr`.

A session with no language (`auto`) goes to the auto lane, the model of `*` when it is
multilingual (else the first multilingual model): Whisper detects the language of each utterance
on that model's encoder output, in the pass that decodes it, and its final carries the language
found. A second pass on the language's own lane (an English utterance re-decoded by `tiny.en`)
would cost one more encoder pass per utterance for no better text: the multilingual model
decodes every language. On a server with English-only models only, `auto` means English.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.config import ANY_LANGUAGE
from server.model_service import BatchService, ResultCallback
from server.ray_services import ModelInfo
from stream.interfaces import AsrEngine, AsrOutput
from stream.scheduler import Request
from stream.session import AsrJob

__all__ = ["AsrLane", "AsrLanes", "LanguageRoutes", "UnsupportedLanguage"]


class UnsupportedLanguage(ValueError):
    """A session asked for a language no lane of this server can transcribe (the message says why)."""


@dataclass(frozen=True, slots=True)
class LanguageRoutes:
    """Which model serves which language, and what a session may ask for. Pure."""

    models: Mapping[str, str]
    """Language code or `ANY_LANGUAGE` → model name (`ServerConfig.language_models()`)."""
    multilingual: Mapping[str, bool]
    """Model name → whether it transcribes other languages than English."""
    known: frozenset[str]
    """The language codes a multilingual model knows (Whisper's)."""

    @property
    def auto_model(self) -> str | None:
        """The model that detects languages (`auto` sessions): the model of `*` when it is
        multilingual, else the first multilingual model; None when every model is English-only."""
        fallback = self.models.get(ANY_LANGUAGE)
        if fallback is not None and self.multilingual[fallback]:
            return fallback
        return next((m for m in self.models.values() if self.multilingual[m]), None)

    def session_language(self, asked: str | None) -> str | None:
        """The language a session asking for `asked` (None: `auto`) runs with: `asked` itself,
        None for detection, or "en" for `auto` on English-only models. Raises
        `UnsupportedLanguage` when no model here can transcribe `asked`."""
        if asked is None:
            return None if self.auto_model is not None else "en"
        if asked != "en" and asked not in self.known:
            raise UnsupportedLanguage(f"language {asked!r} is not one Whisper knows (e.g. en, fr, de, es)")
        model = self.models.get(asked, self.models.get(ANY_LANGUAGE))
        if model is None:
            raise UnsupportedLanguage(
                f"no model on this server serves language {asked!r} (asr_models: {self.describe()}); "
                f"add {asked}=MODEL or *=MODEL, e.g. *=base"
            )
        if asked != "en" and not self.multilingual[model]:
            raise UnsupportedLanguage(
                f"model {model} serves {asked!r} but is English-only; serve it with a multilingual "
                f"model: asr_models = [..., \"{asked}=base\"], or --model base"
            )
        return asked

    def model_for(self, language: str | None) -> str:
        """The model whose lane transcribes `language` (None: the auto lane)."""
        if language is not None:
            model = self.models.get(language, self.models.get(ANY_LANGUAGE))
            if model is not None:
                return model
        return self.auto_model or next(iter(self.models.values()))

    def languages_of(self, model: str) -> list[str]:
        """The entries of `models` that `model` serves (`*`: every other language)."""
        return [language for language, m in self.models.items() if m == model]

    def describe(self) -> str:
        """`en=tiny.en, *=base`."""
        return ", ".join(f"{language}={model}" for language, model in self.models.items())


@dataclass(frozen=True, slots=True)
class AsrLane:
    """One model and its micro-batcher."""

    model: str
    engine: AsrEngine | ModelInfo
    """The engine (or, with `--ray`, the remote actor's description)."""
    service: BatchService[AsrJob, AsrOutput]


class AsrLanes:
    """Every ASR lane of the server, routing each request by its language."""

    def __init__(self, routes: LanguageRoutes, lanes: Sequence[AsrLane]) -> None:
        self.routes = routes
        self.lanes = list(lanes)
        self._by_model = {lane.model: lane for lane in self.lanes}
        missing = set(routes.models.values()) - set(self._by_model)
        if missing:
            raise ValueError(f"no lane for model(s) {', '.join(sorted(missing))}")

    @property
    def model_name(self) -> str:
        """What `ready.model` and `/healthz` show: the lane models, `+`-joined (`tiny.en+base`)."""
        return "+".join(lane.model for lane in self.lanes)

    @property
    def multilingual(self) -> bool:
        """Whether any lane transcribes other languages than English."""
        return self.routes.auto_model is not None

    @property
    def running(self) -> bool:
        return all(lane.service.running for lane in self.lanes)

    def session_language(self, asked: str | None) -> str | None:
        """See `LanguageRoutes.session_language`."""
        return self.routes.session_language(asked)

    def model_for(self, language: str | None) -> str:
        """The model that transcribes a session's `language` (None: `auto`)."""
        return self.routes.model_for(language)

    def lane_for(self, language: str | None) -> AsrLane:
        return self._by_model[self.routes.model_for(language)]

    def submit(self, request: Request[AsrJob], callback: ResultCallback[AsrJob, AsrOutput]) -> None:
        """Queue `request` on the lane of its input's language."""
        self.lane_for(request.payload.input.language).service.submit(request, callback)

    def cancel(self, session_id: str) -> list[Request[AsrJob]]:
        """Drop a session's queued requests on every lane."""
        return [request for lane in self.lanes for request in lane.service.cancel(session_id)]

    def start(self) -> None:
        for lane in self.lanes:
            lane.service.start()

    async def close(self) -> None:
        for lane in self.lanes:
            await lane.service.close()

    def describe(self) -> list[dict[str, Any]]:
        """For `/readyz` and `/v1/stats`: each lane's model, device and languages (`*`: the others;
        `auto` marks the lane that detects languages)."""
        auto = self.routes.auto_model
        return [
            {
                "model": lane.model,
                "device": lane.engine.device,
                "languages": self.routes.languages_of(lane.model) + (["auto"] if lane.model == auto else []),
            }
            for lane in self.lanes
        ]
