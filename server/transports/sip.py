"""SIP dial-in: a SIP user agent server on UDP (`palabre serve --sip-port`), one RTP socket per call.

The socket side only; `server/codecs/sip.py`, `sdp.py` and `rtp.py` read and write the bytes.
A softphone or a PBX calls `sip:<anything>@host:port`:

- INVITE with an SDP offer → 100 Trying, then 200 OK with an SDP answer once the call's
  `LiveSession` is open: G.711 (PCMU or PCMA, the offer's first) received on a UDP port of
  `rtp_ports`, track "caller". Nothing is sent back (the answer is `a=recvonly`); finals go to
  the store. The 200 OK is repeated (RFC 3261 timer G) until the ACK comes, for 32 s at most.
- The conversation is named by an `X-Conversation-Id` header when it holds a valid id, else by
  the Call-ID, its characters outside `[A-Za-z0-9_.-]` made `-` (a resumed id continues its
  conversation), else by the user part of the request URI.
- BYE → 200 OK; the session stops (its pending finals are still stored). CANCEL before the
  answer → 200 OK, and 487 Request Terminated for the INVITE. A re-INVITE of the call → 200 OK
  with the current SDP (a new version when it changed), the caller's new RTP address noted;
  one without the call's codec → 488, and the call goes on. OPTIONS → 200 OK; other methods
  → 405; requests for an unknown call → 481.
- Refusals: 486 Busy Here when the server or the tenant is full or no RTP port is free, 488
  for an offer without G.711 over RTP/AVP (or without SDP: no late offer), 503 while the models
  load, 403 when the call's token (`sip_token`, with `auth`) is not valid.
- A call whose RTP stops for `rtp_timeout_s` (60 s) is ended with a BYE, and so is every call
  when the server stops.

Responses go back to the address the request came from (`rport`, RFC 3581), and a retransmitted
request gets the same response again. RTP is taken from the first source address of a call
(symmetric RTP latching) and reordered over a few packets (`G711Receiver`); RTCP is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import re
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, cast

from server.auth import Authenticator, Scope, authenticate_token
from server.codecs import rtp, sdp, sip
from server.codecs.sip import Headers, Request, make_response, parse_name_addr, serialize
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.idle import IdleTimer
from stream.errors import ErrorCode, ProtocolError
from stream.events import CONVERSATION_ID_RE, Start

__all__ = ["SipEndpoint", "SipServer", "conversation_id_for", "serve_sip"]

log = logging.getLogger(__name__)

TRACK = "caller"
SAMPLE_RATE = 8000
RTP_TIMEOUT_S = 60.0
"""A call that receives no RTP for this long is ended."""
T1 = 0.5
T2 = 4.0
ACK_TIMEOUT_S = 64 * T1
"""How long a 200 OK is repeated while its ACK does not come (RFC 3261 timer H)."""
RESPONSE_CACHE_S = 64 * T1
"""How long a response is kept to answer a retransmission of its request."""
MAX_CACHED_RESPONSES = 4096
"""Responses kept at most (the oldest go first): a flood of requests cannot fill the memory."""
SWEEP_S = 1.0
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
SERVER = "Palabre"
CONVERSATION_HEADER = "X-Conversation-Id"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")

RequestKey = tuple[str, str, int, str]
"""(Call-ID, Via branch, CSeq number, method): a request and its retransmissions."""


def conversation_id_for(request: Request) -> str:
    """The conversation a call goes to: `X-Conversation-Id`, else the Call-ID, else the URI's user."""
    chosen = request.headers.get(CONVERSATION_HEADER)
    if chosen is not None and CONVERSATION_ID_RE.fullmatch(chosen):
        return chosen
    for text in (request.call_id, _uri_user(request.uri)):
        safe = _UNSAFE.sub("-", text).lstrip("_.-")[:128]
        if safe:
            return safe
    return secrets.token_hex(16)


def _uri_user(uri: str) -> str:
    try:
        return sip.parse_uri(uri).user
    except ProtocolError:
        return ""


def _refusal(error: ProtocolError) -> int:
    """The SIP status that refuses an INVITE for this error."""
    return {
        ErrorCode.OVERLOADED: 486,
        ErrorCode.UNAVAILABLE: 503,
        ErrorCode.UNAUTHORIZED: 403,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.BAD_START: 403,
        ErrorCode.BAD_OFFER: 488,
    }.get(error.code, 500)


@dataclass(eq=False)
class Call:
    """One call: its dialog, its RTP socket and its live session."""

    call_id: str
    conversation_id: str
    invite: Request
    """The INVITE that set up the call (re-INVITEs do not replace it)."""
    peer: tuple[str, int]
    """Where the caller's SIP requests come from, and where requests to it go."""
    local_tag: str
    local_address: str
    offer: sdp.SessionDescription
    chosen: sdp.Negotiated
    state: Literal["answering", "answered", "confirmed", "ended"] = "answering"
    """answered: a 200 OK waits for its ACK; confirmed: it came."""
    invite_cseq: int = 0
    """The CSeq of the INVITE answered last (its ACK carries the same number)."""
    live: LiveSession | None = None
    endpoint: asyncio.DatagramTransport | None = None
    rtp_port: int = 0
    receiver: rtp.G711Receiver | None = None
    rtp_source: tuple[str, int] | None = None
    idle: IdleTimer | None = None
    """Ends the call when no RTP comes for `rtp_timeout_s`."""
    rates: ConnectionLimits | None = None
    """The audio rate limit of the call (RTP cannot be paced: a flood ends the call)."""
    answer: bytes = b""
    """The current SDP answer."""
    sdp_session: int = 0
    sdp_version: int = 1
    ok: bytes = b""
    """The 200 OK repeated until its ACK."""
    answered_at: float = 0.0
    retransmit: asyncio.TimerHandle | None = None
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(1 << 16) + 1)
    bad_packets: int = 0


class _RtpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer, call: Call) -> None:
        self.server = server
        self.call = call

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.rtp_received(self.call, data, addr)


@dataclass(frozen=True, slots=True)
class SipEndpoint:
    """What every SIP call shares: the hub, the token its calls run under, the limits."""

    hub: SessionHub
    auth: Authenticator
    token: str | None
    """The configured `sip_token` (None under open access)."""
    limits: LimitsConfig


class SipServer(asyncio.DatagramProtocol):
    """The SIP UDP socket and the calls it serves; `close()` ends them all."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        host: str,
        rtp_ports: tuple[int, int],
        *,
        rtp_timeout_s: float = RTP_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.host = host
        self.rtp_ports = rtp_ports
        self.rtp_timeout_s = rtp_timeout_s
        self.calls: dict[str, Call] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = (host, 0)
        """The bound address of the SIP socket."""
        self._responses: dict[RequestKey, tuple[bytes, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_port = rtp_ports[0] + rtp_ports[0] % 2
        self._sweeper: asyncio.TimerHandle | None = None
        self._sdp_sessions = itertools.count(int(time.time()))

    # --- the SIP socket ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # neither loop subclasses it
        self.address = transport.get_extra_info("sockname")[:2]
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if sip.is_keepalive(data):
            return
        try:
            message = sip.parse(data)
        except ProtocolError as error:
            log.debug("sip %s: dropped a bad message: %s", addr, error)
            return
        if isinstance(message, sip.Response):
            return  # the answer to a BYE of ours
        key = self._key(message)
        if message.method != "ACK" and key in self._responses:
            self._send(self._responses[key][0], addr)  # a retransmission
            return
        handlers = {
            "INVITE": self._on_invite,
            "ACK": self._on_ack,
            "BYE": self._on_bye,
            "CANCEL": self._on_cancel,
            "OPTIONS": self._on_options,
        }
        handler = handlers.get(message.method)
        try:
            if handler is None:
                self._respond(message, addr, 405, headers=[("Allow", ALLOW)])
            else:
                handler(message, addr)
        except ProtocolError as error:  # a header the handler needed is malformed
            log.debug("sip %s: bad %s: %s", addr, message.method, error)
            if message.method != "ACK":
                self._respond(message, addr, 400, warning=error.message)
        except Exception:
            log.exception("sip %s: %s failed", addr, message.method)

    def close(self) -> None:
        """End every call (BYE), close the sockets."""
        for call in list(self.calls.values()):
            self._end(call, "the server stops", bye=True)
        for task in self._tasks:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.transport is not None:
            self.transport.close()

    # --- requests ---------------------------------------------------------------------------

    def _on_invite(self, request: Request, addr: tuple[str, int]) -> None:
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        call = self.calls.get(request.call_id)
        if to_tag is not None:
            if call is None or call.local_tag != to_tag or call.state == "ended":
                self._respond(request, addr, 481)
            else:
                self._reinvite(call, request, addr)
            return
        if call is not None:
            self._respond(request, addr, 482)
            return
        self._respond(request, addr, 100)
        try:
            if not request.body:
                raise ProtocolError(
                    ErrorCode.BAD_OFFER, "an INVITE without SDP (late offer) is not supported"
                )
            offer = sdp.parse(request.body)
            chosen = sdp.negotiate(offer)
        except ProtocolError as error:
            log.info("sip call %s from %s refused: %s", request.call_id, addr, error)
            self._respond(request, addr, 488, warning=error.message)
            return
        call = Call(
            call_id=request.call_id,
            conversation_id=conversation_id_for(request),
            invite=request,
            peer=addr,
            local_tag=secrets.token_hex(8),
            local_address=self._local_address(addr),
            offer=offer,
            chosen=chosen,
            invite_cseq=request.cseq[0],
            sdp_session=next(self._sdp_sessions),
        )
        self.calls[call.call_id] = call
        task = asyncio.get_running_loop().create_task(self._answer(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, call: Call) -> None:
        """Open the RTP socket and the session, then answer 200 OK (or refuse)."""
        request = call.invite
        try:
            live = await self._open_session(call)
        except ProtocolError as error:
            log.info("sip call %s from %s refused: %s", call.call_id, call.peer, error)
            self._refuse(call, _refusal(error), error.message)
            return
        except Exception:
            log.exception("sip call %s: cannot answer", call.call_id)
            self._refuse(call, 500, "internal error")
            return
        call.live = live
        if call.state == "ended":  # cancelled while the session opened
            self._end(call, "cancelled")
            return
        call.receiver = rtp.G711Receiver(call.chosen.payload_type, call.chosen.encoding)
        call.rates = ConnectionLimits(self.endpoint.limits, time.monotonic())
        if live.start is not None:
            call.rates.started(live.start)
        call.answer = self._answer_sdp(call)
        call.state = "answered"
        call.answered_at = time.monotonic()
        call.idle = IdleTimer(
            self.rtp_timeout_s, lambda: self._end(call, f"no RTP for {self.rtp_timeout_s:g} s", bye=True)
        )
        call.ok = self._respond(
            request, call.peer, 200, tag=call.local_tag, headers=self._contact(call), body=call.answer
        )
        self._schedule_retransmit(call, T1)
        log.info(
            "sip call %s from %s: conversation %s, %s on RTP port %d",
            call.call_id,
            call.peer,
            call.conversation_id,
            call.chosen.encoding,
            call.rtp_port,
        )

    async def _open_session(self, call: Call) -> LiveSession:
        endpoint = self.endpoint
        if endpoint.hub.loading:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "models are loading")
        principal = authenticate_token(endpoint.auth, endpoint.token)
        if principal is None or not principal.allows(Scope.STREAM):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "the SIP token is invalid, revoked or lacks 'stream'")
        endpoint.hub.admit(principal.tenant_id)
        await self._open_rtp(call)
        start = Start(
            sample_rate=SAMPLE_RATE,
            encoding=call.chosen.encoding,
            conversation_id=call.conversation_id,
            partials=False,
            track=TRACK,
        )
        # Nothing goes back to the caller: results go to the store.
        return await endpoint.hub.open(principal.tenant_id, start, None, admitted=True)

    async def _open_rtp(self, call: Call) -> None:
        """Bind an even port of the range for the call's RTP (the odd one above is RTCP's)."""
        low, high = self.rtp_ports
        first = low + low % 2
        ports = list(range(first, high + 1, 2))
        if not ports:
            raise ProtocolError(ErrorCode.OVERLOADED, "the RTP port range is empty")
        start = (self._next_port - first) // 2 % len(ports)
        loop = asyncio.get_running_loop()
        for port in ports[start:] + ports[:start]:
            try:
                endpoint, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpEndpoint(self, call), local_addr=(self.address[0], port)
                )
            except OSError:
                continue
            self._next_port = port + 2
            call.endpoint, call.rtp_port = endpoint, port
            return
        raise ProtocolError(ErrorCode.OVERLOADED, f"no free RTP port in {low}-{high}")

    def _reinvite(self, call: Call, request: Request, addr: tuple[str, int]) -> None:
        if call.state == "answering":
            self._respond(request, addr, 491, tag=call.local_tag)
            return
        if request.body:
            try:
                offer = sdp.parse(request.body)
                chosen = sdp.negotiate(offer, (_sdp_name(call.chosen.encoding),))
            except ProtocolError as error:
                self._respond(request, addr, 488, tag=call.local_tag, warning=error.message)
                return
            if (chosen.remote_address, chosen.remote_port) != (
                call.chosen.remote_address,
                call.chosen.remote_port,
            ):
                log.info(
                    "sip call %s: caller's RTP now at %s:%d",
                    call.call_id,
                    chosen.remote_address,
                    chosen.remote_port,
                )
            call.offer, call.chosen = offer, chosen
            call.rtp_source = None  # latch onto the source of the next packet
            if call.receiver is not None:
                call.receiver.payload_type = chosen.payload_type
            answer = self._answer_sdp(call)
            if answer != call.answer:
                call.sdp_version += 1
                call.answer = self._answer_sdp(call)
        call.peer = addr
        call.invite_cseq = request.cseq[0]
        call.state = "answered"
        call.answered_at = time.monotonic()
        call.ok = self._respond(
            request, addr, 200, tag=call.local_tag, headers=self._contact(call), body=call.answer
        )
        self._schedule_retransmit(call, T1)

    def _on_ack(self, request: Request, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        if call is None or call.state != "answered" or request.cseq[0] != call.invite_cseq:
            return  # the ACK of a refusal, or a repeated one
        call.state = "confirmed"
        if call.retransmit is not None:
            call.retransmit.cancel()
        if request.body:  # the answer to the offer of a re-INVITE without SDP
            with contextlib.suppress(ProtocolError):
                call.chosen = sdp.negotiate(sdp.parse(request.body), (_sdp_name(call.chosen.encoding),))
                call.rtp_source = None

    def _on_bye(self, request: Request, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        if call is None or call.state == "ended" or to_tag != call.local_tag:
            self._respond(request, addr, 481)
            return
        self._respond(request, addr, 200, tag=call.local_tag)
        self._end(call, "the caller hung up")

    def _on_cancel(self, request: Request, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        if call is None or request.cseq[0] != call.invite.cseq[0] or request.branch != call.invite.branch:
            self._respond(request, addr, 481)
            return
        self._respond(request, addr, 200, tag=call.local_tag)
        if call.state == "answering":
            self._respond(call.invite, call.peer, 487, tag=call.local_tag)
            self._end(call, "cancelled")

    def _on_options(self, request: Request, addr: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        tag = call.local_tag if call is not None else None
        headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
        self._respond(request, addr, 200, tag=tag, headers=headers)

    # --- RTP ---------------------------------------------------------------------------------

    def rtp_received(self, call: Call, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram on a call's RTP port."""
        live, receiver = call.live, call.receiver
        if live is None or receiver is None or call.state not in ("answered", "confirmed"):
            return
        if rtp.is_rtcp(data) or addr != (call.rtp_source or addr):
            return
        try:
            packet = rtp.parse(data)
        except ProtocolError as error:
            call.bad_packets += 1
            log.debug("sip call %s: dropped a bad RTP packet: %s", call.call_id, error)
            return
        call.rtp_source = addr
        if call.idle is not None:
            call.idle.touch()
        try:
            audio = receiver.feed(packet)
            if audio:
                if call.rates is not None:
                    call.rates.audio(len(audio), time.monotonic(), can_pace=False)
                live.feed(audio)
        except ProtocolError as error:  # audio faster than the rate limit
            log.warning("sip call %s: %s", call.call_id, error)
            self._end(call, error.code.value, bye=True)
        except Exception:
            log.exception("sip call %s: audio failed", call.call_id)
            self._end(call, "audio failed", bye=True)

    # --- ending -----------------------------------------------------------------------------

    def _refuse(self, call: Call, status: int, warning: str) -> None:
        if call.state != "ended":
            self._respond(call.invite, call.peer, status, tag=call.local_tag, warning=warning)
        self._end(call, f"refused ({status})")

    def _end(self, call: Call, why: str, *, bye: bool = False) -> None:
        """Stop the call's session (its finals are still stored) and close its RTP socket."""
        first = call.state != "ended"
        if first and bye and call.state in ("answered", "confirmed"):
            self._send_bye(call)
        call.state = "ended"
        if call.retransmit is not None:
            call.retransmit.cancel()
        if call.idle is not None:
            call.idle.cancel()
        if call.live is not None:
            if call.receiver is not None:
                with contextlib.suppress(ProtocolError):
                    call.live.feed(call.receiver.flush())
            call.live.detach()
            call.receiver = None
        if call.endpoint is not None:
            call.endpoint.close()
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if first:
            log.info("sip call %s ended: %s", call.call_id, why)

    def _send_bye(self, call: Call) -> None:
        invite = call.invite
        contact = invite.headers.get("Contact")
        target = parse_name_addr(contact or invite.headers.get("From") or "").uri
        via = f"SIP/2.0/UDP {_host_port(call.local_address, self.address[1])}"
        call.local_cseq += 1
        headers: list[tuple[str, str]] = [
            ("Via", f"{via};branch=z9hG4bK{secrets.token_hex(8)};rport"),
            ("Max-Forwards", "70"),
            ("From", sip.with_tag(invite.headers.get("To") or "", call.local_tag)),
            ("To", invite.headers.get("From") or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.local_cseq} BYE"),
        ]
        headers += [("Route", route) for route in invite.headers.get_all("Record-Route")]
        headers.append(("User-Agent", SERVER))
        self._send(serialize(Request("BYE", target, Headers(tuple(headers)))), call.peer)

    def _sweep(self) -> None:
        """Once a second: forget old responses."""
        now = time.monotonic()
        for key in [k for k, (_, at) in self._responses.items() if now - at > RESPONSE_CACHE_S]:
            del self._responses[key]
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _schedule_retransmit(self, call: Call, interval: float) -> None:
        if call.retransmit is not None:
            call.retransmit.cancel()

        def again() -> None:
            if call.state != "answered":
                return
            if time.monotonic() - call.answered_at > ACK_TIMEOUT_S:
                self._end(call, "no ACK", bye=True)
                return
            self._send(call.ok, call.peer)
            self._schedule_retransmit(call, min(2 * interval, T2))

        call.retransmit = asyncio.get_running_loop().call_later(interval, again)

    # --- sending ----------------------------------------------------------------------------

    def _respond(
        self,
        request: Request,
        addr: tuple[str, int],
        status: int,
        reason: str | None = None,
        *,
        tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        warning: str | None = None,
    ) -> bytes:
        """Send a response and keep it for the request's retransmissions; returns its bytes."""
        extra = list(headers)
        if warning:
            extra.append(("Warning", f'399 palabre "{warning.replace(chr(34), chr(39))[:200]}"'))
        extra.append(("Server", SERVER))
        response = make_response(
            request,
            status,
            reason,
            to_tag=tag or secrets.token_hex(8),
            source=addr,
            headers=extra,
            body=body,
        )
        data = serialize(response)
        key = self._key(request)
        self._responses.pop(key, None)  # the newest last, for the eviction below
        self._responses[key] = (data, time.monotonic())
        while len(self._responses) > MAX_CACHED_RESPONSES:
            del self._responses[next(iter(self._responses))]
        self._send(data, addr)
        return data

    def _contact(self, call: Call) -> list[tuple[str, str]]:
        """The headers of a 200 OK to an INVITE, besides the copied ones."""
        contact = f"<sip:palabre@{_host_port(call.local_address, self.address[1])}>"
        return [("Contact", contact), ("Allow", ALLOW), ("Content-Type", "application/sdp")]

    def _answer_sdp(self, call: Call) -> bytes:
        return sdp.build_answer(
            call.offer,
            call.chosen,
            address=call.local_address,
            port=call.rtp_port,
            session_id=call.sdp_session,
            version=call.sdp_version,
        )

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    @staticmethod
    def _key(request: Request) -> RequestKey:
        number, method = request.cseq
        return request.call_id, request.branch, number, method

    def _local_address(self, peer: tuple[str, int]) -> str:
        """The address of this host that the caller reaches (for the SDP and the Contact)."""
        host = self.address[0]
        with contextlib.suppress(ValueError):
            if not ipaddress.ip_address(host).is_unspecified:
                return host
        family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((peer[0], peer[1] or 9))  # no packet is sent: the route picks the address
                local: str = probe.getsockname()[0]
                return local
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"


def _sdp_name(encoding: str) -> str:
    return "PCMU" if encoding == "mulaw" else "PCMA"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_sip(
    endpoint: SipEndpoint,
    host: str,
    port: int,
    rtp_ports: tuple[int, int] = (20000, 20999),
    *,
    rtp_timeout_s: float = RTP_TIMEOUT_S,
) -> SipServer:
    """Listen for SIP calls on UDP `host`:`port`; `close()` the returned server to stop."""
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: SipServer(endpoint, host, rtp_ports, rtp_timeout_s=rtp_timeout_s), local_addr=(host, port)
    )
    log.info("listening for SIP on udp %s:%d (RTP ports %d-%d)", host, server.address[1], *rtp_ports)
    return server
