"""server/transports/sip.py over real UDP sockets, with the softphone's captured datagrams.

The session hub is a stand-in (no models): its sessions record what the transport does with them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from server.auth import OpenAccess, startup_refusal
from server.codecs import sdp
from server.codecs.sip import Request, Response, parse, parse_name_addr, serialize
from server.codecs.sip_dialog import ALLOW, Timers, conversation_id_for
from server.config import ServerConfig, port_range
from server.settings import ConfigError, resolve
from server.transports.sip import SipEndpoint, SipServer, serve_sip
from stream.errors import ErrorCode, ProtocolError
from stream.events import Start
from tests.server.sip_fixtures import CALL_ID, fixture, rtp_pcmu

WAIT_S = 2.0


@dataclass
class FakeLive:
    """Records what the transport does with a session."""

    gate: asyncio.Event | None = None
    start: Start | None = None
    audio: bytearray = field(default_factory=bytearray)
    detached: bool = False
    send: object = "client"

    async def open(self, start: Start) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.start = start

    def feed(self, data: bytes) -> None:
        assert not self.detached
        self.audio += data

    def detach(self) -> None:
        self.detached = True


class FakeHub:
    """The part of `SessionHub` a transport uses."""

    def __init__(self) -> None:
        self.services: object | None = object()
        self.sessions: list[FakeLive] = []
        self.registered: list[FakeLive] = []
        self.gate: asyncio.Event | None = None
        self.full = False

    @property
    def loading(self) -> bool:
        return self.services is None

    def admit(self, tenant_id: str, count: int = 1) -> None:
        if self.full:
            raise ProtocolError(ErrorCode.OVERLOADED, "too many sessions")

    async def open(self, tenant_id: str, start: Start, send: object, *, admitted: bool = False) -> FakeLive:
        if not admitted:
            self.admit(tenant_id)
        live = FakeLive(self.gate)
        self.sessions.append(live)
        await live.open(start)
        live.send = send
        self.registered.append(live)
        return live


class Phone(asyncio.DatagramProtocol):
    """A UDP socket that sends datagrams and queues what comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # neither loop subclasses it

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def next(self, timeout: float = WAIT_S) -> Response | Request:
        async with asyncio.timeout(timeout):
            return parse(await self.received.get())

    async def response(self, status: int) -> Response:
        message = await self.next()
        assert isinstance(message, Response), message
        assert message.status == status, (message.status, message.reason, message.headers.get("Warning"))
        return message

    async def silent(self, seconds: float = 0.3) -> None:
        await asyncio.sleep(seconds)
        assert self.received.empty(), parse(self.received.get_nowait())


async def open_phone() -> Phone:
    _, phone = await asyncio.get_running_loop().create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return phone


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Setup:
    hub: FakeHub
    server: SipServer
    phone: Phone
    rtp: Phone

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def send(self, data: bytes) -> None:
        self.phone.send(data, self.address)


Factory = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def setup() -> AsyncIterator[Factory]:
    made: list[Setup] = []

    async def make(ports: int = 40, diarize: bool = False, **kwargs: Any) -> Setup:
        hub = FakeHub()
        low = free_udp_port() & ~1
        endpoint = SipEndpoint(hub, OpenAccess("default"), None, ServerConfig().limits, diarize)  # type: ignore[arg-type]
        server = await serve_sip(endpoint, "127.0.0.1", 0, (low, low + ports), **kwargs)
        made.append(Setup(hub, server, await open_phone(), await open_phone()))
        return made[-1]

    yield make
    for s in made:
        s.server.close()
        for phone in (s.phone, s.rtp):
            assert phone.transport is not None
            phone.transport.close()


async def answer(s: Setup, invite: bytes = fixture("invite")) -> tuple[Response, sdp.SessionDescription, str]:
    """Send an INVITE; return the 200 OK, its SDP answer and the server's To tag."""
    s.send(invite)
    await s.phone.response(100)
    ok = await s.phone.response(200)
    tag = parse_name_addr(ok.headers.get("To") or "").tag
    assert tag is not None
    return ok, sdp.parse(ok.body), tag


def in_dialog(name: str, tag: str) -> bytes:
    """A captured in-dialog request with the server's To tag (the capture's was "cap1")."""
    return fixture(name).replace(b"tag=cap1", b"tag=" + tag.encode())


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_call(setup: Factory) -> None:
    s = await setup()
    ok, answer_sdp, tag = await answer(s)
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert ok.headers.get("Contact") == f"<sip:palabre@127.0.0.1:{s.address[1]}>"
    (audio,) = answer_sdp.media
    assert audio.formats == ("0", "101") and audio.direction == "recvonly"
    assert answer_sdp.connection == "127.0.0.1" and audio.port % 2 == 0
    live = s.hub.registered[0]
    assert live.start == Start(8000, "mulaw", conversation_id=CALL_ID, partials=False, track="caller")
    assert live.send is None
    s.send(fixture("ack"))
    packets = rtp_pcmu()
    for packet in packets:
        s.rtp.send(packet, ("127.0.0.1", audio.port))
    await until(lambda: len(live.audio) == 8 * 160)
    assert bytes(live.audio) == b"".join(p[12:] for p in packets)
    s.rtp.send(fixture("rtcp"), ("127.0.0.1", audio.port))  # ignored
    s.send(in_dialog("bye", tag))
    bye_ok = await s.phone.response(200)
    assert bye_ok.cseq == (19751, "BYE")
    assert live.detached and not s.server.calls
    s.send(in_dialog("bye", tag))  # a retransmission gets the same answer
    assert serialize(await s.phone.response(200)) == serialize(bye_ok)
    s.send(fixture("bye").replace(b"z9hG4bK39ae", b"z9hG4bK0000"))  # a new BYE for a call that ended
    await s.phone.response(481)


def with_header(header: str) -> bytes:
    """The captured INVITE with one more header."""
    call_id = b"Call-ID: " + CALL_ID.encode()
    return fixture("invite").replace(call_id, call_id + b"\r\n" + header.encode())


@pytest.mark.parametrize(
    ("default", "header", "diarize"),
    [
        (False, None, False),
        (True, None, True),
        (False, "X-Diarize: true", True),
        (True, "X-Diarize: FALSE", False),
    ],
)
async def test_a_call_is_diarized_by_its_x_diarize_header_else_the_server_default(
    setup: Factory, default: bool, header: str | None, diarize: bool
) -> None:
    s = await setup(diarize=default)
    await answer(s, fixture("invite") if header is None else with_header(header))
    assert s.hub.registered[0].start.diarize is diarize


async def test_a_bad_x_diarize_header_refuses_the_call_with_400(setup: Factory) -> None:
    s = await setup()
    s.send(with_header("X-Diarize: maybe"))
    await s.phone.response(100)
    refused = await s.phone.response(400)
    assert "X-Diarize must be true or false" in (refused.headers.get("Warning") or "")
    assert not s.hub.registered


async def test_the_200_is_repeated_until_the_ack(setup: Factory) -> None:
    s = await setup(timers=Timers(t1=0.05, t2=0.1))
    ok, _, _ = await answer(s)
    again = await s.phone.response(200)
    assert serialize(again) == serialize(ok)
    s.send(fixture("invite"))  # a retransmitted INVITE gets the 200 too
    await s.phone.response(200)
    s.send(fixture("ack"))
    await asyncio.sleep(0.05)
    while not s.phone.received.empty():
        s.phone.received.get_nowait()
    await s.phone.silent(0.3)


async def test_a_call_cancelled_while_it_rings(setup: Factory) -> None:
    s = await setup()
    s.hub.gate = asyncio.Event()
    s.send(fixture("invite-cancelled"))
    await s.phone.response(100)
    s.send(fixture("cancel"))
    cancel_ok = await s.phone.response(200)
    terminated = await s.phone.response(487)
    assert cancel_ok.cseq == (23434, "CANCEL") and terminated.cseq == (23434, "INVITE")
    s.hub.gate.set()
    await until(lambda: bool(s.hub.registered) and s.hub.registered[0].detached)
    await s.phone.silent()
    s.send(fixture("cancel"))  # the CANCEL again: the same 200
    await s.phone.response(200)


async def test_reinvites(setup: Factory) -> None:
    s = await setup(timers=Timers(t1=10.0))  # no repeated 200s: the re-INVITEs are not ACKed
    _, first, tag = await answer(s)
    s.send(fixture("ack"))
    s.send(in_dialog("reinvite", tag))
    same = await s.phone.response(200)
    assert sdp.parse(same.body) == first  # nothing changed: the same SDP, the same version
    s.send(in_dialog("reinvite-hold", tag).replace(b"m=audio 4812", b"m=audio 4900"))
    hold = await s.phone.response(200)
    assert sdp.parse(hold.body).media[0].direction == "recvonly"  # the caller still sends
    call = s.server.calls[CALL_ID]
    assert call.chosen.remote_port == 4900
    inactive = in_dialog("reinvite-hold", tag).replace(b"a=sendonly", b"a=inactive")
    s.send(inactive.replace(b"CSeq: 19750", b"CSeq: 19760").replace(b"z9hG4bKeed1", b"z9hG4bKeed2"))
    changed = sdp.parse((await s.phone.response(200)).body)
    assert changed.media[0].direction == "inactive" and changed.origin.split()[2] == "2"
    pcma_only = in_dialog("reinvite", tag).replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")
    s.send(pcma_only.replace(b"CSeq: 19749", b"CSeq: 19761").replace(b"z9hG4bK", b"z9hG4bKx"))
    await s.phone.response(488)
    assert CALL_ID in s.server.calls  # the call goes on
    s.send(fixture("reinvite").replace(b"z9hG4bK", b"z9hG4bKy"))  # the capture's tag is not the server's
    await s.phone.response(481)


async def test_options_and_refusals(setup: Factory) -> None:
    s = await setup()
    s.send(fixture("options"))
    options = await s.phone.response(200)
    assert options.headers.get("Allow") == ALLOW
    assert parse_name_addr(options.headers.get("To") or "").tag
    s.send(fixture("options").replace(b"OPTIONS", b"REGISTER"))
    await s.phone.response(405)
    s.send(fixture("bye"))
    await s.phone.response(481)
    no_sdp = (
        fixture("invite-pcma").split(b"\r\n\r\n")[0].replace(b"Content-Length: 315", b"Content-Length: 0")
    )
    s.send(no_sdp + b"\r\n\r\n")
    await s.phone.response(100)
    await s.phone.response(488)
    g722 = (
        fixture("invite").replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9 9 101").replace(b"z9hG4bK32", b"z9hG4bK33")
    )
    s.send(g722.replace(b"d676ba71", b"e676ba71"))
    await s.phone.response(100)
    assert "PCMU" in ((await s.phone.response(488)).headers.get("Warning") or "")
    s.send(b"\r\n\r\n")
    s.send(b"not SIP at all")
    await s.phone.silent()
    assert not s.hub.sessions


async def test_busy_loading_and_no_port(setup: Factory) -> None:
    s = await setup(ports=1)
    s.hub.full = True
    s.send(fixture("invite"))
    await s.phone.response(100)
    await s.phone.response(486)
    s.hub.full, s.hub.services = False, None
    s.send(fixture("invite-pcma"))
    await s.phone.response(100)
    await s.phone.response(503)
    s.hub.services = object()
    await answer(s, fixture("invite-cancelled"))  # takes the only RTP port
    s.send(fixture("invite").replace(b"d676ba71", b"f676ba71").replace(b"z9hG4bK32", b"z9hG4bK34"))
    await s.phone.response(100)
    await s.phone.response(486)


async def test_a_silent_call_is_ended(setup: Factory) -> None:
    s = await setup(rtp_timeout_s=0.3)
    invite = parse(fixture("invite"))
    _, _, tag = await answer(s)
    s.send(fixture("ack"))
    bye = await s.phone.next()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:caller-0x55ca123d4ad0@127.0.0.1:25070"  # the caller's Contact
    assert bye.call_id == CALL_ID and bye.cseq[1] == "BYE"
    assert bye.headers.get("To") == invite.headers.get("From")
    assert parse_name_addr(bye.headers.get("From") or "").tag == tag
    assert s.hub.registered[0].detached and not s.server.calls


async def test_close_ends_the_calls(setup: Factory) -> None:
    s = await setup()
    await answer(s)
    s.server.close()
    bye = await s.phone.next()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert s.hub.registered[0].detached


def invite_with(call_id: str = CALL_ID, uri: str = "sip:test@127.0.0.1:25060", extra: str = "") -> Request:
    data = fixture("invite").replace(b"Call-ID: " + CALL_ID.encode(), f"Call-ID: {call_id}{extra}".encode())
    request = parse(data.replace(b"INVITE sip:test@127.0.0.1:25060", f"INVITE {uri}".encode()))
    assert isinstance(request, Request)
    return request


def test_conversation_ids() -> None:
    assert conversation_id_for(invite_with()) == CALL_ID
    assert (
        conversation_id_for(invite_with("a84b4c76e66710@pc33.atlanta.com"))
        == "a84b4c76e66710-pc33.atlanta.com"
    )
    assert conversation_id_for(invite_with(extra="\r\nX-Conversation-Id: support-0001")) == "support-0001"
    assert conversation_id_for(invite_with(extra="\r\nX-Conversation-Id: not valid")) == CALL_ID
    assert conversation_id_for(invite_with("@@@")) == "test"  # then the URI's user part
    assert conversation_id_for(invite_with("a" * 200)) == "a" * 128
    random = conversation_id_for(invite_with("...", uri="sip:127.0.0.1"))
    assert len(random) == 32 and random != conversation_id_for(invite_with("...", uri="sip:127.0.0.1"))


def test_configuration() -> None:
    assert port_range(" 20000-20999 ") == (20000, 20999)
    for bad in ("20000", "2-1", "0-10", "1-70000", "a-b", "²-5"):
        with pytest.raises(ValueError):
            port_range(bad)
    config = resolve(None, {"PALABRE_SIP_PORT": "5060"}, {"sip_rtp_ports": "30000-30099"}).config
    assert (config.sip_port, config.sip_rtp_ports, config.sip_token) == (5060, "30000-30099", None)
    with pytest.raises(ConfigError, match="sip_rtp_ports"):
        resolve(None, {}, {"sip_rtp_ports": "30099-30000"})
    refusal = startup_refusal(ServerConfig(auth=True, sip_port=5060))
    assert refusal is not None and "--sip-token" in refusal
    assert startup_refusal(ServerConfig(auth=True, sip_port=5060, sip_token="plb_x")) is None
