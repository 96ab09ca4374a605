"""The SIP dialogs of a user agent server as a state machine: requests in, actions out, no I/O.

In the manner of h11's connection and `websockets`' Protocol: the transport
(`server/transports/sip.py`) feeds every datagram of its SIP socket (`receive`), the outcome of
the steps it performs (`answered` once a call's RTP socket and session are open, `refused`
when they cannot be), its decision to end a call (`hang_up`), and the time (`tick`, when
`deadline` says); it performs the actions that come back, in order: `Send` a datagram,
`OpenCall` (RTP socket and session), `MediaChanged` (latch on the caller's new RTP source),
`EndCall` (stop the session, close the RTP socket). Time is a value passed in, in seconds.

The rules of one call (RFC 3261, UDP):

- INVITE with an SDP offer → 100 Trying and `OpenCall`; then 200 OK with an SDP answer
  (G.711, PCMU or PCMA, the offer's first; `a=recvonly`) when `answered`. The 200 OK is
  repeated (timer G: T1, 2·T1, ... at most T2 apart) until the ACK comes; after 64·T1 without
  one (timer H) the call is ended with a BYE.
- The conversation is named by an `X-Conversation-Id` header when it holds a valid id, else by
  the Call-ID, its characters outside `[A-Za-z0-9_.-]` made `-`, else by the user part of the
  request URI (`conversation_id_for`). An `X-Diarize: true` (or `false`) header decides whether
  the speakers of the call are told apart (`diarize_for`; absent: the server's default); another
  value refuses the INVITE with 400.
- BYE → 200 OK and `EndCall`. CANCEL before the answer → 200 OK, 487 Request Terminated for the
  INVITE, and `EndCall`. A re-INVITE → 200 OK with the current SDP (a new version when it
  changed), the caller's new RTP address noted; one without the call's codec → 488, and the call
  goes on; one while the INVITE is still being answered → 491. An INVITE of a call in progress
  without its To tag → 482. OPTIONS → 200 OK; other methods → 405; requests for an unknown
  call → 481; a request whose headers cannot be read → 400.
- Refusals (`refusal_status`): 486 Busy Here when the server or the tenant is full or no RTP
  port is free, 488 for an offer without G.711 over RTP/AVP (or without SDP: no late offer), 503
  while the models load, 403 when the call's token is not valid, 500 otherwise.

Responses go back to the address the request came from (`rport`, RFC 3581), and a
retransmitted request gets the same response again for 64·T1 (the latest `MAX_CACHED_RESPONSES`).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from server.codecs import sdp, sip
from server.codecs.sip import Headers, Request, make_response, parse_name_addr, serialize
from stream.errors import ErrorCode, ProtocolError
from stream.events import CONVERSATION_ID_RE

__all__ = [
    "ALLOW",
    "Action",
    "Address",
    "Dialog",
    "EndCall",
    "LocalEnd",
    "MediaChanged",
    "OpenCall",
    "Send",
    "SipDialogs",
    "Timers",
    "conversation_id_for",
    "diarize_for",
    "refusal_status",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]
"""A UDP (host, port)."""
T1 = 0.5
"""RFC 3261's round-trip estimate, in seconds."""
T2 = 4.0
"""RFC 3261's longest interval between repeats of a 200 OK, in seconds."""
MAX_CACHED_RESPONSES = 4096
"""Responses kept at most (the oldest go first): a flood of requests cannot fill the memory."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
SERVER = "Palabre"
CONVERSATION_HEADER = "X-Conversation-Id"
DIARIZE_HEADER = "X-Diarize"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")

RequestKey = tuple[str, str, int, str]
"""(Call-ID, Via branch, CSeq number, method): a request and its retransmissions."""
State = Literal["answering", "answered", "confirmed", "ended"]


@dataclass(frozen=True, slots=True)
class Timers:
    """The RFC 3261 timer values the dialogs run on (tests shorten them)."""

    t1: float = T1
    t2: float = T2

    @property
    def ack_timeout_s(self) -> float:
        """How long a 200 OK is repeated while its ACK does not come (timer H)."""
        return 64 * self.t1

    @property
    def response_cache_s(self) -> float:
        """How long a response is kept to answer a retransmission of its request."""
        return 64 * self.t1


@dataclass(frozen=True, slots=True)
class LocalEnd:
    """This server's side of a call: the address the caller reaches, the SIP port, the RTP port."""

    address: str
    sip_port: int
    rtp_port: int


@dataclass(eq=False)
class Dialog:
    """One call as the dialog rules see it; the transport only reads it."""

    call_id: str
    conversation_id: str
    invite: Request
    """The INVITE that set up the call (re-INVITEs do not replace it)."""
    peer: Address
    """Where the caller's SIP requests come from, and where requests to it go."""
    local_tag: str
    offer: sdp.SessionDescription
    chosen: sdp.Negotiated
    sdp_session: int
    diarize: bool | None = None
    """The INVITE's `X-Diarize`: tell the call's speakers apart; None: the server's default."""
    state: State = "answering"
    """answered: a 200 OK waits for its ACK; confirmed: it came."""
    invite_cseq: int = 0
    """The CSeq of the INVITE answered last (its ACK carries the same number)."""
    local: LocalEnd | None = None
    """Set once answered."""
    answer: bytes = b""
    """The current SDP answer."""
    sdp_version: int = 1
    ok: bytes = b""
    """The 200 OK repeated until its ACK."""
    answered_at: float = 0.0
    retransmit_at: float | None = None
    """When the 200 OK is repeated next (None: no ACK is awaited)."""
    retransmit_interval: float = 0.0
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(1 << 16) + 1)


@dataclass(frozen=True, slots=True)
class Send:
    """Send this datagram from the SIP socket to `addr`."""

    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class OpenCall:
    """Open the call's RTP socket and session, then call `answered` (or `refused`)."""

    dialog: Dialog


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """The call's SDP changed (`dialog.chosen`): take RTP from the source of the next packet."""

    dialog: Dialog


@dataclass(frozen=True, slots=True)
class EndCall:
    """Stop the call's session (its pending finals are still stored) and close its RTP socket."""

    dialog: Dialog
    why: str


Action = Send | OpenCall | MediaChanged | EndCall


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


def diarize_for(request: Request) -> bool | None:
    """The `X-Diarize` header of an INVITE: True or False ("true"/"false", any case), None when
    absent (the server's default); `ProtocolError(BAD_START)` for another value."""
    value = request.headers.get(DIARIZE_HEADER)
    if value is None:
        return None
    flag = value.strip().lower()
    if flag not in ("true", "false"):
        raise ProtocolError(
            ErrorCode.BAD_START, f"{DIARIZE_HEADER} must be true or false, not {value[:40]!r}"
        )
    return flag == "true"


def refusal_status(error: ProtocolError) -> int:
    """The SIP status that refuses an INVITE for this error."""
    return {
        ErrorCode.OVERLOADED: 486,
        ErrorCode.UNAVAILABLE: 503,
        ErrorCode.UNAUTHORIZED: 403,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.BAD_START: 403,
        ErrorCode.BAD_OFFER: 488,
    }.get(error.code, 500)


class SipDialogs:
    """The calls of one SIP socket, and the responses kept for retransmitted requests."""

    def __init__(self, timers: Timers | None = None, *, first_sdp_session: int = 0) -> None:
        self.timers = timers or Timers()
        self.calls: dict[str, Dialog] = {}
        """The calls in progress, by Call-ID."""
        self._responses: dict[RequestKey, tuple[bytes, float]] = {}
        self._sdp_sessions = itertools.count(first_sdp_session)

    # --- input --------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> list[Action]:
        """A datagram on the SIP socket (keep-alives, responses and unreadable ones are dropped)."""
        if sip.is_keepalive(data):
            return []
        try:
            message = sip.parse(data)
        except ProtocolError as error:
            log.debug("sip %s: dropped a bad message: %s", source, error)
            return []
        if isinstance(message, sip.Response):
            return []  # the answer to a BYE of ours
        return self.receive_request(message, source, now)

    def receive_request(self, request: Request, source: Address, now: float) -> list[Action]:
        """A request that came from `source`."""
        self._forget_responses(now)
        key = _key(request)
        if request.method != "ACK" and key in self._responses:
            return [Send(self._responses[key][0], source)]  # a retransmission
        try:
            if request.method == "INVITE":
                return self._on_invite(request, source, now)
            if request.method == "ACK":
                return self._on_ack(request)
            if request.method == "BYE":
                return self._on_bye(request, source, now)
            if request.method == "CANCEL":
                return self._on_cancel(request, source, now)
            if request.method == "OPTIONS":
                return self._on_options(request, source, now)
            return [self._respond(request, source, 405, now, headers=[("Allow", ALLOW)])]
        except ProtocolError as error:  # a header the rule needed is malformed
            log.debug("sip %s: bad %s: %s", source, request.method, error)
            if request.method == "ACK":
                return []
            return [self._respond(request, source, 400, now, warning=error.message)]

    def answered(self, dialog: Dialog, local: LocalEnd, now: float) -> list[Action]:
        """The `OpenCall` of `dialog` succeeded: answer 200 OK (nothing when the call has ended)."""
        if dialog.state != "answering":
            return []
        dialog.local = local
        dialog.answer = _answer_sdp(dialog)
        log.info(
            "sip call %s from %s: conversation %s, %s on RTP port %d",
            dialog.call_id,
            dialog.peer,
            dialog.conversation_id,
            dialog.chosen.encoding,
            local.rtp_port,
        )
        return self._accept(dialog, dialog.invite, dialog.peer, now)

    def refused(self, dialog: Dialog, status: int, warning: str, now: float) -> list[Action]:
        """The `OpenCall` of `dialog` failed: refuse the INVITE with `status` and end the call."""
        if dialog.state == "ended":
            return []
        log.info("sip call %s from %s refused (%d): %s", dialog.call_id, dialog.peer, status, warning)
        response = self._respond(
            dialog.invite, dialog.peer, status, now, tag=dialog.local_tag, warning=warning
        )
        return [response, *self._end(dialog, f"refused ({status})")]

    def hang_up(self, dialog: Dialog, why: str) -> list[Action]:
        """End a call from this side: a BYE when it was answered, then `EndCall`."""
        if dialog.state == "ended":
            return []
        bye = [Send(_bye(dialog), dialog.peer)] if dialog.state in ("answered", "confirmed") else []
        return [*bye, *self._end(dialog, why)]

    def deadline(self) -> float | None:
        """When `tick` has work next (a 200 OK to repeat, or to give up on); None: nothing waits."""
        return min(
            (d.retransmit_at for d in self.calls.values() if d.retransmit_at is not None), default=None
        )

    def tick(self, now: float) -> list[Action]:
        """The time is `now`: repeat the 200 OKs that are due (timer G), end the calls never ACKed."""
        actions: list[Action] = []
        for dialog in list(self.calls.values()):
            if dialog.retransmit_at is None or dialog.retransmit_at > now:
                continue
            if now - dialog.answered_at > self.timers.ack_timeout_s:
                actions += self.hang_up(dialog, "no ACK")
                continue
            actions.append(Send(dialog.ok, dialog.peer))
            dialog.retransmit_interval = min(2 * dialog.retransmit_interval, self.timers.t2)
            dialog.retransmit_at = now + dialog.retransmit_interval
        self._forget_responses(now)
        return actions

    # --- requests ---------------------------------------------------------------------------

    def _on_invite(self, request: Request, addr: Address, now: float) -> list[Action]:
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        dialog = self.calls.get(request.call_id)
        if to_tag is not None:
            if dialog is None or dialog.local_tag != to_tag:
                return [self._respond(request, addr, 481, now)]
            return self._reinvite(dialog, request, addr, now)
        if dialog is not None:
            return [self._respond(request, addr, 482, now)]
        trying = self._respond(request, addr, 100, now)
        try:
            if not request.body:
                raise ProtocolError(
                    ErrorCode.BAD_OFFER, "an INVITE without SDP (late offer) is not supported"
                )
            diarize = diarize_for(request)
            offer = sdp.parse(request.body)
            chosen = sdp.negotiate(offer)
        except ProtocolError as error:
            log.info("sip call %s from %s refused: %s", request.call_id, addr, error)
            status = 400 if error.code is ErrorCode.BAD_START else 488
            return [trying, self._respond(request, addr, status, now, warning=error.message)]
        dialog = Dialog(
            call_id=request.call_id,
            conversation_id=conversation_id_for(request),
            diarize=diarize,
            invite=request,
            peer=addr,
            local_tag=secrets.token_hex(8),
            offer=offer,
            chosen=chosen,
            sdp_session=next(self._sdp_sessions),
            invite_cseq=request.cseq[0],
        )
        self.calls[dialog.call_id] = dialog
        return [trying, OpenCall(dialog)]

    def _reinvite(self, dialog: Dialog, request: Request, addr: Address, now: float) -> list[Action]:
        if dialog.state == "answering":
            return [self._respond(request, addr, 491, now, tag=dialog.local_tag)]
        actions: list[Action] = []
        if request.body:
            try:
                offer = sdp.parse(request.body)
                chosen = sdp.negotiate(offer, (_sdp_name(dialog.chosen.encoding),))
            except ProtocolError as error:
                return [self._respond(request, addr, 488, now, tag=dialog.local_tag, warning=error.message)]
            if (chosen.remote_address, chosen.remote_port) != (
                dialog.chosen.remote_address,
                dialog.chosen.remote_port,
            ):
                log.info(
                    "sip call %s: caller's RTP now at %s:%d",
                    dialog.call_id,
                    chosen.remote_address,
                    chosen.remote_port,
                )
            dialog.offer, dialog.chosen = offer, chosen
            actions.append(MediaChanged(dialog))
            answer = _answer_sdp(dialog)
            if answer != dialog.answer:
                dialog.sdp_version += 1
                dialog.answer = _answer_sdp(dialog)
        return actions + self._accept(dialog, request, addr, now)

    def _accept(self, dialog: Dialog, request: Request, addr: Address, now: float) -> list[Action]:
        """Answer an INVITE or a re-INVITE 200 OK, to be repeated until its ACK."""
        assert dialog.local is not None
        dialog.peer = addr
        dialog.invite_cseq = request.cseq[0]
        dialog.state = "answered"
        dialog.answered_at = now
        contact = f"<sip:palabre@{_host_port(dialog.local.address, dialog.local.sip_port)}>"
        headers = [("Contact", contact), ("Allow", ALLOW), ("Content-Type", "application/sdp")]
        ok = self._respond(request, addr, 200, now, tag=dialog.local_tag, headers=headers, body=dialog.answer)
        dialog.ok = ok.data
        dialog.retransmit_interval = self.timers.t1
        dialog.retransmit_at = now + self.timers.t1
        return [ok]

    def _on_ack(self, request: Request) -> list[Action]:
        dialog = self.calls.get(request.call_id)
        if dialog is None or dialog.state != "answered" or request.cseq[0] != dialog.invite_cseq:
            return []  # the ACK of a refusal, or a repeated one
        dialog.state = "confirmed"
        dialog.retransmit_at = None
        if not request.body:
            return []
        try:  # the answer to the offer of a re-INVITE without SDP
            dialog.chosen = sdp.negotiate(sdp.parse(request.body), (_sdp_name(dialog.chosen.encoding),))
        except ProtocolError:
            return []
        return [MediaChanged(dialog)]

    def _on_bye(self, request: Request, addr: Address, now: float) -> list[Action]:
        dialog = self.calls.get(request.call_id)
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        if dialog is None or to_tag != dialog.local_tag:
            return [self._respond(request, addr, 481, now)]
        ok = self._respond(request, addr, 200, now, tag=dialog.local_tag)
        return [ok, *self._end(dialog, "the caller hung up")]

    def _on_cancel(self, request: Request, addr: Address, now: float) -> list[Action]:
        dialog = self.calls.get(request.call_id)
        if dialog is None or not _cancels(request, dialog.invite):
            return [self._respond(request, addr, 481, now)]
        actions: list[Action] = [self._respond(request, addr, 200, now, tag=dialog.local_tag)]
        if dialog.state == "answering":
            actions.append(self._respond(dialog.invite, dialog.peer, 487, now, tag=dialog.local_tag))
            actions += self._end(dialog, "cancelled")
        return actions

    def _on_options(self, request: Request, addr: Address, now: float) -> list[Action]:
        dialog = self.calls.get(request.call_id)
        tag = dialog.local_tag if dialog is not None else None
        headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
        return [self._respond(request, addr, 200, now, tag=tag, headers=headers)]

    # --- state --------------------------------------------------------------------------------

    def _end(self, dialog: Dialog, why: str) -> list[Action]:
        dialog.state = "ended"
        dialog.retransmit_at = None
        if self.calls.get(dialog.call_id) is dialog:
            del self.calls[dialog.call_id]
        log.info("sip call %s ended: %s", dialog.call_id, why)
        return [EndCall(dialog, why)]

    def _respond(
        self,
        request: Request,
        addr: Address,
        status: int,
        now: float,
        *,
        tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        warning: str | None = None,
    ) -> Send:
        """A response, kept for the request's retransmissions."""
        extra = list(headers)
        if warning:
            extra.append(("Warning", f'399 palabre "{warning.replace(chr(34), chr(39))[:200]}"'))
        extra.append(("Server", SERVER))
        response = make_response(
            request, status, to_tag=tag or secrets.token_hex(8), source=addr, headers=extra, body=body
        )
        data = serialize(response)
        key = _key(request)
        self._responses.pop(key, None)  # the newest last, for the evictions
        self._responses[key] = (data, now)
        while len(self._responses) > MAX_CACHED_RESPONSES:
            del self._responses[next(iter(self._responses))]
        return Send(data, addr)

    def _forget_responses(self, now: float) -> None:
        """Forget the responses older than the cache time (the oldest come first)."""
        while self._responses:
            key = next(iter(self._responses))
            if now - self._responses[key][1] <= self.timers.response_cache_s:
                return
            del self._responses[key]


def _key(request: Request) -> RequestKey:
    number, method = request.cseq
    return request.call_id, request.branch, number, method


def _cancels(cancel: Request, request: Request) -> bool:
    """Whether a CANCEL is for this request (the same branch and CSeq number)."""
    return (cancel.branch, cancel.cseq[0]) == (request.branch, request.cseq[0])


def _uri_user(uri: str) -> str:
    try:
        return sip.parse_uri(uri).user
    except ProtocolError:
        return ""


def _sdp_name(encoding: str) -> str:
    return "PCMU" if encoding == "mulaw" else "PCMA"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _answer_sdp(dialog: Dialog) -> bytes:
    assert dialog.local is not None
    return sdp.build_answer(
        dialog.offer,
        dialog.chosen,
        address=dialog.local.address,
        port=dialog.local.rtp_port,
        session_id=dialog.sdp_session,
        version=dialog.sdp_version,
    )


def _bye(dialog: Dialog) -> bytes:
    """A BYE of this side for an answered call (to its Contact, through its Record-Routes)."""
    assert dialog.local is not None
    invite = dialog.invite
    contact = invite.headers.get("Contact")
    target = parse_name_addr(contact or invite.headers.get("From") or "").uri
    via = f"SIP/2.0/UDP {_host_port(dialog.local.address, dialog.local.sip_port)}"
    dialog.local_cseq += 1
    headers: list[tuple[str, str]] = [
        ("Via", f"{via};branch=z9hG4bK{secrets.token_hex(8)};rport"),
        ("Max-Forwards", "70"),
        ("From", sip.with_tag(invite.headers.get("To") or "", dialog.local_tag)),
        ("To", invite.headers.get("From") or ""),
        ("Call-ID", dialog.call_id),
        ("CSeq", f"{dialog.local_cseq} BYE"),
    ]
    headers += [("Route", route) for route in invite.headers.get_all("Record-Route")]
    headers.append(("User-Agent", SERVER))
    return serialize(Request("BYE", target, Headers(tuple(headers))))
