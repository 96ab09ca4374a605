"""SDP (RFC 4566) offers and answers (RFC 3264) for a receive-only G.711 audio call.

Pure, no I/O; the SIP transport is `server/transports/sip.py`. A softphone's offer:

    v=0
    o=- 3757119384 431274938 IN IP4 192.0.2.2
    s=-
    c=IN IP4 192.0.2.2
    t=0 0
    m=audio 41554 RTP/AVP 0 8 101
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=sendrecv
    a=ptime:20

`parse(body)` reads the lines Palabre uses (o=, c=, m= and the rtpmap, fmtp, ptime, rtcp-mux and
direction attributes; the others are skipped); `negotiate(offer)` picks the first audio stream
over plain RTP and, in the offer's order, PCMU (payload type 0) or PCMA (8), plus
telephone-event when offered; `build_answer` writes the answer: the chosen stream receive-only
(Palabre listens and sends nothing), every other m-line refused with port 0, as RFC 3264 §6 says.
Errors are `ProtocolError`s with code BAD_OFFER: an unreadable SDP, no audio stream over
RTP/AVP, or no G.711 codec in it (a SIP UAS answers 488 Not Acceptable Here).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal, cast

from stream.errors import ErrorCode, ProtocolError

MAX_SDP_BYTES = 16_384
Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
PROTOCOLS = ("RTP/AVP", "RTP/AVPF")
"""Unencrypted RTP; SRTP (RTP/SAVP, UDP/TLS/RTP/SAVPF) is refused."""
G711: dict[str, Literal["mulaw", "alaw"]] = {"PCMU": "mulaw", "PCMA": "alaw"}
"""G.711 encodings by their SDP name, as Palabre's `Start.encoding` names them."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    """`a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`."""

    encoding: str
    clock_rate: int
    channels: int = 1


STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap("PCMU", 8000),
    3: RtpMap("GSM", 8000),
    8: RtpMap("PCMA", 8000),
    9: RtpMap("G722", 8000),
    13: RtpMap("CN", 8000),
    18: RtpMap("G729", 8000),
}
"""The audio payload types of RFC 3551 an offer may use without an rtpmap."""


@dataclass(frozen=True, slots=True)
class Media:
    """One m= section."""

    kind: str
    port: int
    protocol: str
    formats: tuple[str, ...]
    connection: str | None = None
    """The section's own c= address, if any."""
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: Direction | None = None
    ptime: int | None = None
    rtcp_mux: bool = False

    def codec(self, payload_type: int) -> RtpMap | None:
        """What a payload type of this section carries (static types need no rtpmap)."""
        return self.rtpmap.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)

    def payload_types(self) -> list[int]:
        """The numeric formats, in the offer's order of preference."""
        return [int(f) for f in self.formats if f.isascii() and f.isdigit() and int(f) < 128]


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: str
    """The o= line's value."""
    connection: str | None
    """The session-level c= address."""
    direction: Direction | None
    media: tuple[Media, ...]


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the answer to an offer agrees on."""

    media_index: int
    """Which m= section of the offer carries the audio."""
    payload_type: int
    encoding: Literal["mulaw", "alaw"]
    telephone_event: int | None
    """The payload type of RFC 4733 DTMF events, when offered."""
    telephone_event_fmtp: str | None
    remote_address: str
    remote_port: int
    ptime: int | None
    direction: Direction
    """Palabre's direction in the answer: recvonly, or inactive when the caller sends nothing."""


_MEDIA_LINE = re.compile(r"(\w+) ([0-9]{1,5})(?:/[0-9]+)? (\S+)((?: \S+)*)")
_RTPMAP = re.compile(r"([0-9]{1,3}) ([^/\s]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?")


def parse(data: bytes | str, max_bytes: int = MAX_SDP_BYTES) -> SessionDescription:
    """The parts of an SDP body that an audio answer needs."""
    if len(data) > max_bytes:
        raise ProtocolError(ErrorCode.BAD_OFFER, f"SDP of {len(data)} bytes exceeds {max_bytes}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_OFFER, "SDP is not UTF-8") from None
    lines = [line.rstrip("\r") for line in data.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise ProtocolError(ErrorCode.BAD_OFFER, "SDP does not start with v=0")
    session = _Section()
    sections: list[_Section] = []
    for line in lines[1:]:
        kind, equals, value = line.partition("=")
        if len(kind) != 1 or not equals:
            raise ProtocolError(ErrorCode.BAD_OFFER, f"bad SDP line {line[:60]!r}")
        value = value.strip()
        section = sections[-1] if sections else session
        if kind == "m":
            match = _MEDIA_LINE.fullmatch(value)
            if match is None or int(match.group(2)) > 65535:
                raise ProtocolError(ErrorCode.BAD_OFFER, f"bad SDP media line {value[:60]!r}")
            sections.append(
                _Section(match.group(1), int(match.group(2)), match.group(3), tuple(match.group(4).split()))
            )
        elif kind == "o" and not sections:
            session.origin = value
        elif kind == "c":
            section.connection = _connection(value)
        elif kind == "a":
            name, _, attribute = value.partition(":")
            section.attribute(name, attribute.strip())
    media = tuple(s.media() for s in sections)
    return SessionDescription(session.origin, session.connection, session.direction, media)


@dataclass(slots=True)
class _Section:
    """A session or media section while it is read."""

    kind: str = ""
    port: int = 0
    protocol: str = ""
    formats: tuple[str, ...] = ()
    origin: str = ""
    connection: str | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: Direction | None = None
    ptime: int | None = None
    rtcp_mux: bool = False

    def attribute(self, name: str, value: str) -> None:
        """Record an a= line; malformed ones are skipped like unknown ones."""
        if name in DIRECTIONS:
            self.direction = cast(Direction, name)
        elif name == "rtpmap":
            match = _RTPMAP.fullmatch(value)
            if match is not None and int(match.group(1)) < 128:
                channels = int(match.group(4)) if match.group(4) else 1
                self.rtpmap[int(match.group(1))] = RtpMap(match.group(2), int(match.group(3)), channels)
        elif name == "fmtp":
            pt, _, params = value.partition(" ")
            if pt.isascii() and pt.isdigit() and len(pt) <= 3:
                self.fmtp[int(pt)] = params.strip()
        elif name == "ptime":
            ptime = value.partition(".")[0]
            if ptime.isascii() and ptime.isdigit() and 0 < len(ptime) <= 4:
                self.ptime = int(ptime)
        elif name == "rtcp-mux":
            self.rtcp_mux = True

    def media(self) -> Media:
        return Media(
            self.kind,
            self.port,
            self.protocol,
            self.formats,
            self.connection,
            self.rtpmap,
            self.fmtp,
            self.direction,
            self.ptime,
            self.rtcp_mux,
        )


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ProtocolError(ErrorCode.BAD_OFFER, f"bad SDP connection line {value[:60]!r}")
    return parts[2].partition("/")[0]  # without a multicast address's /ttl


def negotiate(offer: SessionDescription, encodings: Collection[str] = tuple(G711)) -> Negotiated:
    """Choose the audio stream and codec of the answer.

    `encodings`: the acceptable SDP names (a re-INVITE keeps the call's codec by passing only it).
    """
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0:
            continue
        if media.protocol.upper() not in PROTOCOLS:
            raise ProtocolError(ErrorCode.BAD_OFFER, f"audio over {media.protocol} is not supported")
        address = media.connection or offer.connection
        if address is None:
            raise ProtocolError(ErrorCode.BAD_OFFER, "no connection address (c=) for the audio")
        chosen: tuple[int, Literal["mulaw", "alaw"]] | None = None
        event: int | None = None
        for pt in media.payload_types():
            codec = media.codec(pt)
            if codec is None or codec.clock_rate != 8000 or codec.channels != 1:
                continue
            name = codec.encoding.upper()
            if chosen is None and name in G711 and name in encodings:
                chosen = (pt, G711[name])
            elif event is None and name == "TELEPHONE-EVENT":
                event = pt
        if chosen is None:
            offered = " ".join(media.formats)
            raise ProtocolError(ErrorCode.BAD_OFFER, f"no {'/'.join(encodings)} among formats {offered}")
        direction = media.direction or offer.direction or "sendrecv"
        return Negotiated(
            media_index=index,
            payload_type=chosen[0],
            encoding=chosen[1],
            telephone_event=event,
            telephone_event_fmtp=media.fmtp.get(event) if event is not None else None,
            remote_address=address,
            remote_port=media.port,
            ptime=media.ptime,
            direction="recvonly" if direction in ("sendrecv", "sendonly") else "inactive",
        )
    raise ProtocolError(ErrorCode.BAD_OFFER, "the offer has no audio stream")


def build_answer(
    offer: SessionDescription,
    chosen: Negotiated,
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
) -> bytes:
    """The answer's SDP: Palabre receives the chosen audio at `address`:`port`."""
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=palabre {session_id} {version} IN {family} {address}",
        "s=palabre",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    for index, media in enumerate(offer.media):
        if index != chosen.media_index:
            lines.append(f"m={media.kind} 0 {media.protocol} {media.formats[0] if media.formats else '0'}")
            continue
        formats = [chosen.payload_type]
        if chosen.telephone_event is not None:
            formats.append(chosen.telephone_event)
        lines.append(f"m=audio {port} {media.protocol} {' '.join(map(str, formats))}")
        name = "PCMU" if chosen.encoding == "mulaw" else "PCMA"
        lines.append(f"a=rtpmap:{chosen.payload_type} {name}/8000")
        if chosen.telephone_event is not None:
            lines.append(f"a=rtpmap:{chosen.telephone_event} telephone-event/8000")
            lines.append(f"a=fmtp:{chosen.telephone_event} {chosen.telephone_event_fmtp or '0-15'}")
        if chosen.ptime is not None:
            lines.append(f"a=ptime:{chosen.ptime}")
        lines.append(f"a={chosen.direction}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
