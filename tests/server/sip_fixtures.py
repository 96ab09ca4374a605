"""Datagrams captured from a real softphone, for the SIP, SDP and RTP codec and transport tests.

tests/server/fixtures/sip/ holds what baresip 1.0.0 (Debian 12) sent to a UDP socket on
127.0.0.1 while it was driven through its ctrl_tcp module: an OPTIONS; a call (INVITE with an
SDP offer of PCMU, PCMA and telephone-event, ACK, a re-INVITE, a hold re-INVITE with
`a=sendonly`, BYE); a call cancelled while ringing (INVITE, CANCEL); a call offering PCMA only;
the first eight RTP packets of the PCMU call, one of the PCMA call, and an RTCP packet. The
capturing socket answered the INVITEs with a 200 OK whose To tag was `cap1`.
"""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "sip"

SIP_MESSAGES = (
    "options",
    "invite",
    "ack",
    "reinvite",
    "reinvite-hold",
    "bye",
    "invite-cancelled",
    "cancel",
    "invite-pcma",
)
CALL_ID = "d676ba7125088b5f"
"""The Call-ID of the call of invite.bin, ack.bin, reinvite*.bin and bye.bin."""


def fixture(name: str) -> bytes:
    """The bytes of `<name>.bin`."""
    return (FIXTURES / f"{name}.bin").read_bytes()


def rtp_pcmu() -> list[bytes]:
    """The first eight RTP packets of the PCMU call, in the order they were sent."""
    return [fixture(f"rtp-pcmu-{i}") for i in range(1, 9)]
