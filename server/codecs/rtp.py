"""RTP (RFC 3550) packets, and the G.711 audio of a call put back in order from them.

Pure, no I/O; the socket side is `server/transports/sip.py`. A packet on the wire:

    byte 0   V=2 (2 bits) | P padding | X extension | CC: CSRC count (4 bits)
    byte 1   M marker | PT payload type (7 bits)
    2-3      sequence number     4-7  timestamp     8-11  SSRC
    then     CC CSRCs (4 bytes each); with X, a 4-byte extension header (profile, length in
             32-bit words) and its words; the payload; with P, padding whose last byte counts it.

`parse(data)` returns an `RtpPacket` and `pack(packet)` is its inverse. A datagram that is not
an RTP packet is a `ProtocolError` with code BAD_AUDIO; RTCP multiplexed on the same port
(RFC 5761) is recognised by `is_rtcp` first.

`Reorderer` puts the packets of a stream back in sequence order: it holds at most `depth`
packets while it waits for a missing one, drops duplicates and packets that come after their
turn, follows the sequence number across its wrap at 65535, and starts over when the SSRC
changes or the sequence number jumps (two packets in a row far from the stream).
`G711Receiver` turns the ordered packets of one payload type into audio bytes, filling the
gaps that timestamps show (lost packets, silence suppression) with silence, so that the audio
keeps the call's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.errors import ErrorCode, ProtocolError

VERSION = 2
HEADER_BYTES = 12
SEQUENCE_MOD = 1 << 16
TIMESTAMP_MOD = 1 << 32
SILENCE: dict[str, int] = {"mulaw": 0xFF, "alaw": 0xD5}
"""The G.711 byte of a zero sample."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    """(profile, data) of a header extension (RFC 3550 §5.3.1)."""
    padding: int = 0
    """Bytes of padding after the payload on the wire (0: none)."""


def is_rtcp(data: bytes) -> bool:
    """An RTCP packet (types 192-223, RFC 5761 §4), not RTP."""
    return len(data) >= 2 and data[0] >> 6 == VERSION and 192 <= data[1] <= 223


def parse(data: bytes) -> RtpPacket:
    """One RTP packet from one datagram."""
    if len(data) < HEADER_BYTES:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"RTP packet of {len(data)} bytes, under {HEADER_BYTES}")
    first, second = data[0], data[1]
    if first >> 6 != VERSION:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"RTP version {first >> 6}, not 2")
    if is_rtcp(data):
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"an RTCP packet (type {second}), not RTP")
    end = len(data)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0:
            raise ProtocolError(ErrorCode.BAD_AUDIO, "RTP padding of 0 bytes")
        end -= padding
    offset = HEADER_BYTES + 4 * (first & 0x0F)
    csrcs = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(HEADER_BYTES, offset, 4))
    extension = None
    if first & 0x10:
        if offset + 4 > end:
            raise ProtocolError(ErrorCode.BAD_AUDIO, "RTP extension header past the end of the packet")
        profile = int.from_bytes(data[offset : offset + 2], "big")
        words = int.from_bytes(data[offset + 2 : offset + 4], "big")
        extension = (profile, bytes(data[offset + 4 : offset + 4 + 4 * words]))
        offset += 4 + 4 * words
    if offset > end:
        raise ProtocolError(
            ErrorCode.BAD_AUDIO, "RTP header, extension or padding past the end of the packet"
        )
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def pack(packet: RtpPacket) -> bytes:
    """The bytes of a packet on the wire."""
    if len(packet.csrcs) > 15 or not 0 <= packet.padding <= 255 or not 0 <= packet.payload_type <= 127:
        raise ValueError("at most 15 CSRCs, 255 bytes of padding, payload types 0-127")
    first = VERSION << 6 | len(packet.csrcs)
    if packet.padding:
        first |= 0x20
    if packet.extension is not None:
        first |= 0x10
    header = bytearray([first, packet.payload_type | (0x80 if packet.marker else 0)])
    header += packet.sequence.to_bytes(2, "big") + packet.timestamp.to_bytes(4, "big")
    header += packet.ssrc.to_bytes(4, "big")
    for csrc in packet.csrcs:
        header += csrc.to_bytes(4, "big")
    if packet.extension is not None:
        profile, data = packet.extension
        if len(data) % 4:
            raise ValueError("an RTP header extension is a whole number of 32-bit words")
        header += profile.to_bytes(2, "big") + (len(data) // 4).to_bytes(2, "big") + data
    padding = bytes(packet.padding - 1) + bytes([packet.padding]) if packet.padding else b""
    return bytes(header) + packet.payload + padding


class Reorderer:
    """The packets of one stream in sequence order, over a window of `depth` packets.

    As in RFC 3550 §A.1, a packet up to `max_misorder` behind the window is late (dropped), one
    up to `max_dropout` ahead is in the stream, and one elsewhere is a jump: the stream starts
    over from it when the next packet follows it, and it is dropped otherwise.
    """

    def __init__(self, depth: int = 2, max_dropout: int = 3000, max_misorder: int = 100) -> None:
        self.depth = depth
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.ssrc: int | None = None
        self._next: int | None = None
        """The extended (unwrapped) sequence number of the packet due next."""
        self._held: dict[int, RtpPacket] = {}
        self._jump: RtpPacket | None = None
        """A packet far from the stream: a restart if the next packet follows it."""
        self.dropped = 0
        """Duplicates, packets that came after their turn, and lone jumps."""
        self.lost = 0
        """Sequence numbers skipped: packets that never came, or came too late."""
        self.restarts = 0

    def feed(self, packet: RtpPacket) -> list[RtpPacket]:
        """Add a received packet; return the packets now due, in order."""
        out: list[RtpPacket] = []
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            out += self._restart()
        self.ssrc = packet.ssrc
        if self._next is None:
            self._next = packet.sequence
        delta = (packet.sequence - self._next) % SEQUENCE_MOD
        if delta > self.max_dropout:
            jump, self._jump = self._jump, None
            if jump is None or packet.sequence != (jump.sequence + 1) % SEQUENCE_MOD:
                self.dropped += 1
                if delta <= SEQUENCE_MOD - self.max_misorder:
                    self._jump = packet  # perhaps a restart: the next packet tells
                return out
            out += self._restart()
            self.ssrc, self._next = packet.ssrc, jump.sequence
            self.dropped -= 1  # the jump was not dropped after all
            self._held[self._next] = jump
            delta = 1
        self._jump = None
        index = self._next + delta
        if index in self._held:
            self.dropped += 1
            return out
        self._held[index] = packet
        return out + self._release(self.depth)

    def flush(self) -> list[RtpPacket]:
        """Every held packet, in order (the end of the stream)."""
        return self._release(0)

    def _release(self, depth: int) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        assert self._next is not None or not self._held
        while self._held:
            assert self._next is not None
            while self._next in self._held:
                out.append(self._held.pop(self._next))
                self._next += 1
            if len(self._held) <= depth:
                break
            first = min(self._held)  # give up waiting for the missing packets before it
            self.lost += first - self._next
            self._next = first
        return out

    def _restart(self) -> list[RtpPacket]:
        out = self.flush()
        self.restarts += 1
        self.ssrc = self._next = None
        return out


class G711Receiver:
    """The audio bytes of a call from its RTP packets, in one G.711 payload type.

    Packets of other payload types (telephone-event, comfort noise) are counted in `ignored`.
    A gap of up to `max_gap_s` in the timestamps is filled with silence; a larger jump, or a
    new SSRC, is a new start.
    """

    def __init__(
        self,
        payload_type: int,
        encoding: Literal["mulaw", "alaw"],
        *,
        depth: int = 2,
        max_gap_s: float = 10.0,
    ) -> None:
        self.payload_type = payload_type
        self.encoding = encoding
        self.reorderer = Reorderer(depth)
        self.max_gap = round(max_gap_s * 8000)
        self.ignored = 0
        self.filled = 0
        """Samples of silence inserted for gaps."""
        self._silence = bytes([SILENCE[encoding]])
        self._ssrc: int | None = None
        self._expected: int | None = None

    def feed(self, packet: RtpPacket) -> bytes:
        """Audio that this packet completes (often its payload; empty while one is missing)."""
        return b"".join(self._take(p) for p in self.reorderer.feed(packet))

    def flush(self) -> bytes:
        """The audio of the packets still held (the end of the call)."""
        return b"".join(self._take(p) for p in self.reorderer.flush())

    def _take(self, packet: RtpPacket) -> bytes:
        if packet.payload_type != self.payload_type:
            self.ignored += 1
            return b""
        fill = b""
        if packet.ssrc != self._ssrc:
            self._ssrc, self._expected = packet.ssrc, None
        if self._expected is not None:
            gap = (packet.timestamp - self._expected) % TIMESTAMP_MOD
            if 0 < gap <= self.max_gap:
                fill = self._silence * gap
                self.filled += gap
        self._expected = (packet.timestamp + len(packet.payload)) % TIMESTAMP_MOD
        return fill + packet.payload
