"""A recogniser without a model, as the server's ASR lanes (for session tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from server.asr_lanes import AsrLane, AsrLanes, LanguageRoutes
from server.model_service import ModelService
from server.ray_services import ModelInfo
from stream.interfaces import AsrOutput
from stream.scheduler import Scheduler, SchedulerConfig
from stream.session import AsrJob


def fake_lanes(recognise: Callable[[Sequence[AsrJob]], list[AsrOutput]]) -> AsrLanes:
    """One English lane, "fake", whose micro-batcher runs `recognise` (not started)."""
    asr = ModelService[AsrJob, AsrOutput](
        "asr", recognise, Scheduler[AsrJob](SchedulerConfig(max_wait_s=0)), 1
    )
    return AsrLanes(
        LanguageRoutes({"*": "fake"}, {"fake": False}, frozenset({"en"})),
        [AsrLane("fake", ModelInfo("fake", "cpu"), asr)],
    )


def hearing(text: str) -> AsrLanes:
    """Lanes whose recogniser always hears `text` (in English)."""

    def recognise(jobs: Sequence[AsrJob]) -> list[AsrOutput]:
        return [AsrOutput(text=text, language="en") for _ in jobs]

    return fake_lanes(recognise)
