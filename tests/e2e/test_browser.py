"""The meeting page and the dashboard in a real browser (Chromium driven by Playwright).

Chromium's fake microphone plays the synthesised meeting (tests/fixtures: espeak-ng speech,
looped by Chromium), so the pages run exactly as for a user: getUserMedia, WebRTC to aiortc or
the AudioWorklet over the WebSocket, the watch channel, the ask box. Every test uses the one
shared `tiny.en` server (with memory and the bundled LLM). The tests that pass save
docs/screenshots/meeting.png and docs/screenshots/dashboard.png.

Needs Debian's `chromium` (`./dev setup` installs it) and the `playwright` package; no browser
is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from stream.answers import CANNOT_ANSWER
from tests.conftest import REPO_ROOT, PalabreServer
from tests.requirements import require_chromium, require_module

pytestmark = pytest.mark.slow

SCREENSHOTS = (
    REPO_ROOT / "docs" / "screenshots"
    if os.environ.get("PALABRE_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "palabre-screenshots"
)
"""docs/screenshots/ is rewritten only with PALABRE_UPDATE_SCREENSHOTS=1 (else a temp folder)."""
VIEWPORT = {"width": 1280, "height": 800}
LEAD_SILENCE_S = 1.5
"""Silence before the speech in the fake microphone: WebRTC takes about a second to connect."""
TAIL_SILENCE_S = 2.0
FINALS_TIMEOUT_MS = 60_000
KEYWORDS = ("budget", "marketing", "contract", "friday", "competitor", "engineers", "march")
"""Words of en_meeting.wav that tiny.en gets right."""

sync_api = require_module("playwright.sync_api")


# --- fixtures ----------------------------------------------------------------------------------------


def microphone_file(speech: Path, folder: Path) -> Path:
    """`speech` between stretches of silence: the 16-bit PCM WAV Chromium's fake microphone loops."""
    with wave.open(str(speech), "rb") as source:
        params = source.getparams()
        frames = source.readframes(params.nframes)
    assert params.sampwidth == 2, "Chromium wants 16-bit PCM"
    frame_bytes = params.sampwidth * params.nchannels

    def silence(seconds: float) -> bytes:
        return b"\0" * (int(seconds * params.framerate) * frame_bytes)

    path = folder / speech.name
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(silence(LEAD_SILENCE_S) + frames + silence(TAIL_SILENCE_S))
    return path


@pytest.fixture(scope="module")
def fake_microphone(speech_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The meeting's microphone: en_meeting.wav (one voice, five statements)."""
    return microphone_file(speech_dir / "en_meeting.wav", tmp_path_factory.mktemp("microphone"))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Callable[[Path], Any]]:
    """Launch headless Chromium with a given fake microphone file (one browser per file: the
    microphone is a command-line flag); every one is closed after the module."""
    chromium_path = require_chromium()  # ./dev setup installs Debian's chromium
    with sync_api.sync_playwright() as playwright:
        launched: list[Any] = []

        def launch(microphone: Path) -> Any:
            args = [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ]
            launched.append(playwright.chromium.launch(executable_path=chromium_path, args=args))
            return launched[-1]

        yield launch
        for browser in launched:
            browser.close()


@pytest.fixture(scope="module")
def browser(chromium: Callable[[Path], Any], fake_microphone: Path) -> Any:
    """One headless Chromium for the module, its microphone faked from `fake_microphone`."""
    return chromium(fake_microphone)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile per test; JavaScript errors on any of its pages fail the test."""
    ctx = browser.new_context(viewport=VIEWPORT)
    errors: list[str] = []
    ctx.on("weberror", lambda error: errors.append(str(error.error)))
    yield ctx
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def server(palabre_server: Callable[..., PalabreServer]) -> PalabreServer:
    return palabre_server("tiny.en")


# --- helpers -----------------------------------------------------------------------------------------


def finals(page: Any, selector: str = "#transcript li.final .text") -> list[str]:
    texts: list[str] = page.locator(selector).all_inner_texts()
    return texts


def wait_finals(page: Any, count: int, selector: str = "#transcript li.final") -> None:
    page.wait_for_function(
        f"document.querySelectorAll({selector!r}).length >= {count}", timeout=FINALS_TIMEOUT_MS
    )


def keywords_in(texts: list[str]) -> set[str]:
    words = set(re.findall(r"[a-z]+", " ".join(texts).lower()))
    return words & set(KEYWORDS)


def conversation_of(page: Any) -> str:
    """The conversation id the meeting page put in its URL at `ready`."""
    return parse_qs(urlparse(page.url).query)["conversation"][0]


def open_meeting(context: Any, server: PalabreServer, query: str = "", name: str = "Alice") -> Any:
    page = context.new_page()
    page.goto(f"{server.http}/{query}")
    page.fill("#name", name)
    page.click("#mic")
    return page


def stop_meeting(page: Any) -> None:
    page.click("#mic")
    page.wait_for_function("document.querySelector('#status').textContent === 'stopped'", timeout=30_000)


def status(page: Any) -> str:
    text: str = page.inner_text("#status")
    return text


# --- tests -------------------------------------------------------------------------------------------


def test_meeting_over_webrtc_and_the_dashboard_following_it(context: Any, server: PalabreServer) -> None:
    dashboard = context.new_page()
    dashboard.goto(f"{server.http}/dashboard")
    dashboard.wait_for_function("document.querySelector('#status').textContent === 'live'")

    meeting = open_meeting(context, server)
    wait_finals(meeting, 3)
    assert status(meeting) == "live · WebRTC"
    assert meeting.locator("#banner").is_hidden()
    spoken = finals(meeting)
    assert len(keywords_in(spoken)) >= 2, spoken

    conversation = conversation_of(meeting)
    row = dashboard.locator(f'#conversations tbody tr[data-conversation-id="{conversation}"]')
    row.wait_for()
    assert "ended" not in (row.get_attribute("class") or "")
    assert "webrtc" in row.inner_text()
    dashboard.wait_for_function("Number(document.querySelector('#f-sessions').textContent) >= 1")
    dashboard.wait_for_function("parseFloat(document.querySelector('#f-audio').textContent) > 0.3")
    row.click()
    wait_finals(dashboard, 3, "#d-transcript li.final")
    followed = finals(dashboard, "#d-transcript li.final .text")
    assert set(spoken) & set(followed), (spoken, followed)
    wait_finals(meeting, 5)  # the dashboard keeps following while the meeting runs
    dashboard.wait_for_function(
        "document.querySelectorAll('#d-transcript li.final').length >= 5", timeout=FINALS_TIMEOUT_MS
    )
    dashboard.wait_for_timeout(2500)  # a fresh `stats` message for the picture
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dashboard.screenshot(path=str(SCREENSHOTS / "dashboard.png"))

    stop_meeting(meeting)
    dashboard.wait_for_function(
        f"document.querySelector('#conversations tr[data-conversation-id=\"{conversation}\"]')"
        ".classList.contains('ended')",
        timeout=30_000,
    )


def test_meeting_over_the_socket_only(context: Any, server: PalabreServer) -> None:
    meeting = open_meeting(context, server, "?transport=socket")
    wait_finals(meeting, 2)
    assert status(meeting) == "live · WebSocket"
    assert meeting.input_value("#transport") == "socket"
    assert len(keywords_in(finals(meeting))) >= 1, finals(meeting)
    stop_meeting(meeting)


def test_webrtc_failure_falls_back_to_the_socket(context: Any, server: PalabreServer) -> None:
    context.add_init_script(
        "RTCPeerConnection.prototype.createOffer = () => Promise.reject(new Error('blocked by the test'));"
    )
    meeting = open_meeting(context, server)
    wait_finals(meeting, 2)
    assert status(meeting) == "live · WebSocket (fallback)"
    assert "blocked by the test" in meeting.inner_text("#banner")
    assert len(keywords_in(finals(meeting))) >= 1, finals(meeting)
    stop_meeting(meeting)


def test_microphone_denied_is_explained(context: Any, server: PalabreServer) -> None:
    context.add_init_script(
        "if (navigator.mediaDevices) navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    page = context.new_page()
    page.goto(server.http + "/")
    page.fill("#name", "Alice")
    page.click("#mic")
    page.locator("#banner.error").wait_for()
    assert "Microphone access was denied" in page.inner_text("#banner")
    assert status(page) == "microphone blocked"
    assert page.inner_text("#mic") == "Start microphone"


def test_a_lost_server_is_shown_and_the_page_reconnects(context: Any, server: PalabreServer) -> None:
    attempts: list[str] = []

    def stream_socket(ws: Any) -> None:
        attempts.append(ws.url)
        if len(attempts) == 1:
            ws.close(code=1011, reason="gone")  # the first connection dies at once
        else:
            ws.connect_to_server()

    page = context.new_page()
    page.route_web_socket(re.compile(r".*/v1/stream.*"), stream_socket)
    page.goto(server.http + "/")
    page.fill("#name", "Alice")
    page.click("#mic")
    page.locator("#banner.warn").wait_for()
    assert "Reconnecting in 1 s" in page.inner_text("#banner")
    page.wait_for_function("document.querySelector('#status').textContent === 'live · WebRTC'")
    assert "Reconnected" in page.inner_text("#banner")
    assert len(attempts) == 2
    stop_meeting(page)


def test_a_connection_lost_mid_meeting_resumes_the_conversation(context: Any, server: PalabreServer) -> None:
    """The socket drops after two finals: the page reconnects with `resume_after` its last seq,
    into the same conversation, and no utterance shows twice."""
    starts: list[dict[str, Any]] = []
    finals_seen = 0

    def stream_socket(ws: Any) -> None:
        nonlocal finals_seen
        upstream = ws.connect_to_server()
        first = not starts

        def from_page(message: Any) -> None:
            if isinstance(message, str) and '"start"' in message:
                starts.append(json.loads(message))
            upstream.send(message)

        def from_server(message: Any) -> None:
            nonlocal finals_seen
            ws.send(message)
            is_final = isinstance(message, str) and '"type":"final"' in message and '"text":""' not in message
            if first and is_final:
                finals_seen += 1
                if finals_seen == 2:
                    ws.close(code=1001, reason="network")  # the page sees a drop
                    upstream.close()

        ws.on_message(from_page)
        upstream.on_message(from_server)

    page = context.new_page()
    page.route_web_socket(re.compile(r".*/v1/stream.*"), stream_socket)
    page.goto(server.http + "/")
    page.fill("#name", "Alice")
    page.click("#mic")
    page.locator("#banner.warn").wait_for(timeout=FINALS_TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#banner').textContent.includes('Reconnected')",
                           timeout=FINALS_TIMEOUT_MS)
    wait_finals(page, 4)
    stop_meeting(page)
    assert len(starts) == 2, starts
    assert "resume_after" not in starts[0]
    assert starts[1]["conversation_id"] == conversation_of(page)
    assert starts[1]["resume_after"] >= 1  # the seq of the second final (or later)
    ids = page.locator("#transcript li.final").evaluate_all("lis => lis.map(li => li.dataset.utteranceId)")
    assert len(ids) == len(set(ids)), ids
    texts = [t for t in finals(page) if t.strip()]
    assert len(texts) == len(set(texts)), texts


def test_question_gets_a_streamed_answer_with_a_citation(context: Any, server: PalabreServer) -> None:
    meeting = open_meeting(context, server)
    wait_finals(meeting, 4)
    stop_meeting(meeting)  # the final summary follows; the answer then has the CPU to itself

    deltas: list[str] = []

    def watch(ws: Any) -> None:
        ws.on("framereceived", lambda frame: deltas.append(frame) if '"answer.delta"' in str(frame) else None)

    meeting.on("websocket", watch)
    meeting.fill("#question", "What is the marketing budget for next year?")
    meeting.click("#ask-form button")
    cite = meeting.locator("#citations button.cite").first
    cite.wait_for(timeout=FINALS_TIMEOUT_MS)
    assert deltas, "the answer was not streamed"
    answer = meeting.inner_text("#answer-text")
    assert not answer.startswith(CANNOT_ANSWER), f"the fallback, not the model's answer: {answer!r}"
    assert "four hundred thousand" in answer.lower() or "400" in answer, answer
    assert "streaming" not in (meeting.get_attribute("#answer", "class") or "")

    cited = cite.get_attribute("data-utterance-id")
    cite.click()
    highlighted = meeting.locator("#transcript li.highlight")
    highlighted.wait_for()
    assert highlighted.count() == 1
    assert highlighted.get_attribute("data-utterance-id") == cited
    meeting.locator("#summary li, #summary p:not(.empty)").first.wait_for(timeout=30_000)

    conversation = conversation_of(meeting)
    meeting.click("#mic")  # the microphone again: the same conversation resumes
    meeting.wait_for_function(
        "[...document.querySelectorAll('#transcript li.partial .text')]"
        ".some((e) => e.textContent.replace('…', '').trim().length > 2)",
        timeout=FINALS_TIMEOUT_MS,
    )
    assert status(meeting) == "live · WebRTC"
    assert conversation_of(meeting) == conversation
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    meeting.screenshot(path=str(SCREENSHOTS / "meeting.png"))
    stop_meeting(meeting)


def test_the_meeting_language_defaults_to_the_browsers(browser: Any, server: PalabreServer) -> None:
    """A French browser gets French selected; `?language=` still wins; a language the page does not
    offer keeps English."""
    cases = (("fr-FR", "", "fr"), ("fr-FR", "?language=en", "en"), ("ja-JP", "", "en"))
    for locale, query, expected in cases:
        ctx = browser.new_context(viewport=VIEWPORT, locale=locale)
        try:
            page = ctx.new_page()
            page.goto(f"{server.http}/{query}")
            assert page.input_value("#language") == expected, (locale, query)
        finally:
            ctx.close()


# --- meetings of several participants ----------------------------------------------------------------

ALICE_WORDS = ("parrot", "turtle", "elephant", "rabbit", "horse", "purple", "yellow", "orange", "green")
"""Words of en_speaker_a.wav (colours and animals, voice en-us)."""
BOB_WORDS = ("trains", "paris", "berlin", "flights", "london", "madrid", "buses", "chicago", "toronto")
"""Words of en_speaker_b.wav (numbers and cities, voice en-us+f3)."""


def said_by(page: Any, name: str) -> list[str]:
    """The finals the page shows under `name`."""
    texts: list[str] = page.locator("#transcript li.final").evaluate_all(
        f"lis => lis.filter(li => li.querySelector('.who').textContent === {name!r})"
        ".map(li => li.querySelector('.text').textContent)"
    )
    return texts


def wait_said(page: Any, name: str, words: tuple[str, ...], more_than: int = 0) -> list[str]:
    """Wait until the page shows more than `more_than` finals under `name`, one with a word of
    `words`; returns them."""
    pattern = "|".join(words)
    page.wait_for_function(
        f"""(() => {{
            const mine = [...document.querySelectorAll('#transcript li.final')]
              .filter(li => li.querySelector('.who').textContent === {name!r});
            return mine.length > {more_than}
              && mine.some(li => /{pattern}/i.test(li.querySelector('.text').textContent));
        }})()""",
        timeout=FINALS_TIMEOUT_MS,
    )
    return said_by(page, name)


def participants(page: Any) -> list[str]:
    names: list[str] = page.locator("#participants .who").all_inner_texts()
    return names


def messages_sent(page: Any, kind: str) -> list[dict[str, Any]]:
    """Collects the JSON messages of type `kind` the page sends on /v1/stream (from now on)."""
    sent: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        if "/v1/stream" in ws.url:
            ws.on("framesent", lambda frame: sent.append(json.loads(frame))
                  if isinstance(frame, str) and f'"type":"{kind}"' in frame else None)

    page.on("websocket", on_socket)
    return sent


def events_received(page: Any, needle: str) -> list[str]:
    """Collects the text frames the page receives on /v1/stream that contain `needle`."""
    received: list[str] = []

    def on_socket(ws: Any) -> None:
        if "/v1/stream" in ws.url:
            ws.on("framereceived", lambda frame: received.append(frame)
                  if isinstance(frame, str) and needle in frame else None)

    page.on("websocket", on_socket)
    return received


@pytest.fixture
def two_voices(
    chromium: Callable[[Path], Any], speech_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any]]:
    """Two participants' browser profiles, each in its own Chromium with its own microphone: Alice's
    en_speaker_a.wav, Bob's en_speaker_b.wav (two espeak-ng voices)."""
    folder = tmp_path_factory.mktemp("voices")
    contexts = [
        chromium(microphone_file(speech_dir / name, folder)).new_context(viewport=VIEWPORT)
        for name in ("en_speaker_a.wav", "en_speaker_b.wav")
    ]
    errors: list[str] = []
    for ctx in contexts:
        ctx.on("weberror", lambda error: errors.append(str(error.error)))
    yield contexts[0], contexts[1]
    for ctx in contexts:
        ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_two_participants_see_each_other_and_a_reload_affects_only_its_own(
    two_voices: tuple[Any, Any], server: PalabreServer
) -> None:
    """Alice starts a meeting, Bob joins by its link: each page shows both names and the other's
    words under the other's name, live. Bob reloads his page and starts again: he resumes his own
    track (same client id, `resume_after`) and Alice's session is untouched (no second `ready`, no
    `superseded`); her later words still reach both pages."""
    alice_ctx, bob_ctx = two_voices
    alice = alice_ctx.new_page()
    alice_readies = events_received(alice, '"type":"ready"')
    alice_errors = events_received(alice, '"type":"error"')
    alice.goto(server.http + "/")
    alice.fill("#name", "Alice")
    alice.click("#mic")
    alice.locator("#join").wait_for(timeout=30_000)  # shown at `ready`
    link = alice.input_value("#join-link")
    conversation = parse_qs(urlparse(link).query)["conversation"][0]
    assert link == f"{server.http}/?conversation={conversation}"

    bob = bob_ctx.new_page()
    bob_starts = messages_sent(bob, "start")
    bob.goto(link)
    bob.fill("#name", "Bob")
    bob.click("#mic")

    for page in (alice, bob):
        page.wait_for_function(
            "['Alice', 'Bob'].every(n => [...document.querySelectorAll('#participants .who')]"
            ".some(e => e.textContent === n))",
            timeout=FINALS_TIMEOUT_MS,
        )
    bob.wait_for_function(  # the other participant's partials show live too, under her name
        "[...document.querySelectorAll('#transcript li.partial .who')].some(e => e.textContent === 'Alice')",
        timeout=FINALS_TIMEOUT_MS,
    )
    alice_said = wait_said(bob, "Alice", ALICE_WORDS)
    bob_said = wait_said(alice, "Bob", BOB_WORDS)
    wait_said(alice, "Alice", ALICE_WORDS)
    assert not any(word in " ".join(alice_said).lower() for word in BOB_WORDS), alice_said
    assert not any(word in " ".join(bob_said).lower() for word in ALICE_WORDS), bob_said
    seqs = alice.locator("#transcript li.final").evaluate_all("lis => lis.map(li => li.dataset.utteranceId)")
    assert [int(s.split(":")[1]) for s in seqs] == sorted(int(s.split(":")[1]) for s in seqs)
    chips = alice.locator("#participants .who")
    colours = {chips.nth(i).inner_text(): chips.nth(i).get_attribute("style") for i in range(chips.count())}
    assert colours["Alice"] != colours["Bob"], colours

    dashboard = alice_ctx.new_page()
    dashboard.goto(f"{server.http}/dashboard")
    row = dashboard.locator(f'#conversations tbody tr[data-conversation-id="{conversation}"]')
    row.wait_for()
    assert {"Alice", "Bob"} <= set(row.locator(".who").all_inner_texts())
    dashboard.close()

    # Bob reloads his page (a lost tab, a crashed renderer) and starts again.
    alice_finals = len(said_by(alice, "Alice"))
    bob.reload()
    assert bob.input_value("#name") == "Bob"
    bob.click("#mic")
    bob.wait_for_function("document.querySelector('#status').textContent.startsWith('live')", timeout=30_000)
    first, again = bob_starts[0], bob_starts[-1]
    assert len(bob_starts) == 2, bob_starts
    assert again["track"] == first["track"] == "Bob"
    assert again["client_id"] == first["client_id"] and again["conversation_id"] == conversation
    assert "resume_after" in again and "resume_after" not in first

    wait_said(alice, "Alice", ALICE_WORDS, more_than=alice_finals)  # her session goes on
    wait_said(bob, "Alice", ALICE_WORDS, more_than=len(alice_said))  # and reaches Bob's new page
    wait_said(alice, "Bob", BOB_WORDS, more_than=len(bob_said))
    assert len(alice_readies) == 1, alice_readies  # Alice never reconnected
    assert not [e for e in alice_errors if "superseded" in e], alice_errors
    assert status(alice) == "live · WebRTC" and alice.locator("#banner").is_hidden()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(SCREENSHOTS / "meeting-participants.png"))
    for page in (alice, bob):
        stop_meeting(page)


def test_a_room_microphone_tells_its_voices_apart(context: Any, server: PalabreServer) -> None:
    """The "Room microphone" switch asks for `diarize`: finals show a speaker label, not the track."""
    page = context.new_page()
    starts = messages_sent(page, "start")
    page.goto(server.http + "/")
    page.fill("#name", "Room 4")
    page.check("#room")
    page.click("#mic")
    wait_finals(page, 2)
    stop_meeting(page)
    assert starts[0]["diarize"] is True and starts[0]["track"] == "Room 4"
    labels = set(page.locator("#transcript li.final .who").all_inner_texts())
    assert labels and all(re.fullmatch(r"S\d+", label) for label in labels), labels


def test_the_page_asks_for_the_participants_name(context: Any, server: PalabreServer) -> None:
    page = context.new_page()
    page.goto(server.http + "/")
    page.click("#mic")
    assert "Enter your name" in page.inner_text("#banner")
    assert status(page) == "idle" and page.inner_text("#mic") == "Start microphone"
    assert page.evaluate("document.activeElement.id") == "name"
