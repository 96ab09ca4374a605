"""SIP dial-in: a SIP user agent server on UDP (`palabre serve --sip-port`), one RTP socket per call.

The socket side only: the dialog rules (which response to which request, when to repeat the
200 OK, when a call ends) are `server/codecs/sip_dialog.py`; `sip.py`, `sdp.py` and `rtp.py`
read and write the bytes. A softphone or a PBX calls `sip:<anything>@host:port`; this loop
feeds the SIP socket's datagrams to the dialogs and performs what they say:

- `OpenCall`: bind an RTP port of `rtp_ports` for the call, open its `LiveSession` through the
  hub (G.711 at 8 kHz, track "caller"; nothing is sent back: finals go to the store), then
  report `answered` or `refused` (486 when the server or the tenant is full or no RTP port is
  free, 503 while the models load, 403 when the call's token, `sip_token` with `auth`, is not
  valid);
- `EndCall`: stop the session (its pending finals are still stored), close the RTP socket;
- `Send`, and the dialogs' timers on the event loop's clock.

A call whose RTP stops for `rtp_timeout_s` (60 s) is ended with a BYE, and so is every call
when the server stops. RTP is taken from the first source address of a call (symmetric RTP
latching) and reordered over a few packets (`G711Receiver`); RTCP is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from server.auth import Authenticator, Scope, authenticate_token
from server.codecs import rtp
from server.codecs.sip_dialog import (
    Action,
    Dialog,
    EndCall,
    LocalEnd,
    MediaChanged,
    OpenCall,
    Send,
    SipDialogs,
    Timers,
    refusal_status,
)
from server.config import LimitsConfig
from server.limits import ConnectionLimits
from server.live import LiveSession
from server.sessions import SessionHub
from server.transports.idle import IdleTimer
from stream.errors import ErrorCode, ProtocolError
from stream.events import Start

__all__ = ["SipEndpoint", "SipServer", "serve_sip"]

log = logging.getLogger(__name__)

TRACK = "caller"
SAMPLE_RATE = 8000
RTP_TIMEOUT_S = 60.0
"""A call that receives no RTP for this long is ended."""


@dataclass(eq=False)
class CallMedia:
    """The I/O of one call: its RTP socket, its receiver and its live session."""

    dialog: Dialog
    local_address: str
    """The address of this host that the caller reaches (for the SDP and the Contact)."""
    live: LiveSession | None = None
    endpoint: asyncio.DatagramTransport | None = None
    rtp_port: int = 0
    receiver: rtp.G711Receiver | None = None
    rtp_source: tuple[str, int] | None = None
    idle: IdleTimer | None = None
    """Ends the call when no RTP comes for `rtp_timeout_s`."""
    rates: ConnectionLimits | None = None
    """The audio rate limit of the call (RTP cannot be paced: a flood ends the call)."""
    bad_packets: int = 0
    closed: bool = False


class _RtpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer, call: CallMedia) -> None:
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
    diarize: bool = False
    """Tell the speakers of a call apart unless its INVITE says otherwise (`X-Diarize`)."""


class SipServer(asyncio.DatagramProtocol):
    """The SIP UDP socket and the calls it serves; `close()` ends them all."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        host: str,
        rtp_ports: tuple[int, int],
        *,
        rtp_timeout_s: float = RTP_TIMEOUT_S,
        timers: Timers | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.host = host
        self.rtp_ports = rtp_ports
        self.rtp_timeout_s = rtp_timeout_s
        self.dialogs = SipDialogs(timers, first_sdp_session=int(time.time()))
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = (host, 0)
        """The bound address of the SIP socket."""
        self._media: dict[str, CallMedia] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_port = rtp_ports[0] + rtp_ports[0] % 2
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def calls(self) -> dict[str, Dialog]:
        """The calls in progress, by Call-ID."""
        return self.dialogs.calls

    # --- the SIP socket ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # neither loop subclasses it
        self.address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._perform(self.dialogs.receive(data, addr, self._now()))
        except Exception:
            log.exception("sip %s: a request failed", addr)

    def close(self) -> None:
        """End every call (BYE), close the sockets."""
        for dialog in list(self.dialogs.calls.values()):
            self._perform(self.dialogs.hang_up(dialog, "the server stops"))
        for task in self._tasks:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None
        if self.transport is not None:
            self.transport.close()

    # --- actions ----------------------------------------------------------------------------

    def _perform(self, actions: Iterable[Action]) -> None:
        """Do what the dialogs said, in order; then wait for their next deadline."""
        for action in actions:
            if isinstance(action, Send):
                self._send(action.data, action.addr)
            elif isinstance(action, OpenCall):
                self._open_call(action.dialog)
            elif isinstance(action, MediaChanged):
                self._media_changed(action.dialog)
            elif isinstance(action, EndCall):
                call = self._media.get(action.dialog.call_id)
                if call is not None and call.dialog is action.dialog:
                    self._close(call)
        self._arm()

    def _arm(self) -> None:
        """Call `tick` at the dialogs' deadline (one timer for every call)."""
        deadline = self.dialogs.deadline()
        if deadline == self._timer_at or (self.transport is not None and self.transport.is_closing()):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer, self._timer_at = None, None
        # A timer may fire a little early (uvloop counts in milliseconds): it is its deadline.
        self._perform(self.dialogs.tick(max(self._now(), deadline)))

    def _open_call(self, dialog: Dialog) -> None:
        call = CallMedia(dialog, self._local_address(dialog.peer))
        self._media[dialog.call_id] = call
        task = asyncio.get_running_loop().create_task(self._answer(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _media_changed(self, dialog: Dialog) -> None:
        call = self._media.get(dialog.call_id)
        if call is None or call.dialog is not dialog:
            return
        call.rtp_source = None  # latch onto the source of the next packet
        if call.receiver is not None:
            call.receiver.payload_type = dialog.chosen.payload_type

    async def _answer(self, call: CallMedia) -> None:
        """Open the RTP socket and the session, then tell the dialogs (they answer or refuse)."""
        dialog = call.dialog
        try:
            live = await self._open_session(call)
        except ProtocolError as error:
            self._refuse(call, refusal_status(error), error.message)
            return
        except Exception:
            log.exception("sip call %s: cannot answer", dialog.call_id)
            self._refuse(call, 500, "internal error")
            return
        call.live = live
        if call.closed:  # cancelled while the session opened
            self._close(call)
            return
        call.receiver = rtp.G711Receiver(dialog.chosen.payload_type, dialog.chosen.encoding)
        call.rates = ConnectionLimits(self.endpoint.limits, time.monotonic())
        if live.start is not None:
            call.rates.started(live.start)
        call.idle = IdleTimer(
            self.rtp_timeout_s, lambda: self._hang_up(call, f"no RTP for {self.rtp_timeout_s:g} s")
        )
        local = LocalEnd(call.local_address, self.address[1], call.rtp_port)
        self._perform(self.dialogs.answered(dialog, local, self._now()))

    async def _open_session(self, call: CallMedia) -> LiveSession:
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
            encoding=call.dialog.chosen.encoding,
            conversation_id=call.dialog.conversation_id,
            partials=False,
            track=TRACK,
            diarize=endpoint.diarize if call.dialog.diarize is None else call.dialog.diarize,
        )
        # Nothing goes back to the caller: results go to the store.
        return await endpoint.hub.open(principal.tenant_id, start, None, admitted=True)

    async def _open_rtp(self, call: CallMedia) -> None:
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

    # --- RTP ---------------------------------------------------------------------------------

    def rtp_received(self, call: CallMedia, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram on a call's RTP port."""
        live, receiver = call.live, call.receiver
        if live is None or receiver is None or call.closed:
            return
        if rtp.is_rtcp(data) or addr != (call.rtp_source or addr):
            return
        try:
            packet = rtp.parse(data)
        except ProtocolError as error:
            call.bad_packets += 1
            log.debug("sip call %s: dropped a bad RTP packet: %s", call.dialog.call_id, error)
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
            log.warning("sip call %s: %s", call.dialog.call_id, error)
            self._hang_up(call, error.code.value)
        except Exception:
            log.exception("sip call %s: audio failed", call.dialog.call_id)
            self._hang_up(call, "audio failed")

    # --- ending -----------------------------------------------------------------------------

    def _refuse(self, call: CallMedia, status: int, warning: str) -> None:
        self._perform(self.dialogs.refused(call.dialog, status, warning, self._now()))
        self._close(call)  # when cancelled meanwhile, its RTP socket may have opened since

    def _hang_up(self, call: CallMedia, why: str) -> None:
        self._perform(self.dialogs.hang_up(call.dialog, why))

    def _close(self, call: CallMedia) -> None:
        """Stop the call's session (its finals are still stored) and close its RTP socket."""
        call.closed = True
        if call.idle is not None:
            call.idle.cancel()
        if call.live is not None:
            if call.receiver is not None:
                with contextlib.suppress(ProtocolError):
                    call.live.feed(call.receiver.flush())
            call.live.detach()
            call.live, call.receiver = None, None
        if call.endpoint is not None:
            call.endpoint.close()
        if self._media.get(call.dialog.call_id) is call:
            del self._media[call.dialog.call_id]

    # --- the socket ---------------------------------------------------------------------------

    def _now(self) -> float:
        """The dialogs' clock: the event loop's."""
        return asyncio.get_running_loop().time()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

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


async def serve_sip(
    endpoint: SipEndpoint,
    host: str,
    port: int,
    rtp_ports: tuple[int, int] = (20000, 20999),
    *,
    rtp_timeout_s: float = RTP_TIMEOUT_S,
    timers: Timers | None = None,
) -> SipServer:
    """Listen for SIP calls on UDP `host`:`port`; `close()` the returned server to stop."""
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: SipServer(endpoint, host, rtp_ports, rtp_timeout_s=rtp_timeout_s, timers=timers),
        local_addr=(host, port),
    )
    log.info("listening for SIP on udp %s:%d (RTP ports %d-%d)", host, server.address[1], *rtp_ports)
    return server
