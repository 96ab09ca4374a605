"""server/codecs/sip_dialog.py with plain calls and a fake clock, on the softphone's captured datagrams."""

from __future__ import annotations

import pytest

from server.codecs import sdp
from server.codecs.sip import Request, Response, parse, parse_name_addr
from server.codecs.sip_dialog import (
    ALLOW,
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
from stream.errors import ErrorCode, ProtocolError
from tests.server.sip_fixtures import CALL_ID, fixture

PHONE = ("127.0.0.1", 25070)
LOCAL = LocalEnd("127.0.0.1", 25060, 20000)


def responses(actions: list[Action]) -> list[Response]:
    """The responses among `actions`, parsed (each one sent back to the phone)."""
    out: list[Response] = []
    for action in actions:
        if isinstance(action, Send):
            assert action.addr == PHONE
            message = parse(action.data)
            if isinstance(message, Response):
                out.append(message)
    return out


def statuses(actions: list[Action]) -> list[int]:
    return [response.status for response in responses(actions)]


def sent(actions: list[Action]) -> list[bytes]:
    return [action.data for action in actions if isinstance(action, Send)]


def invite(dialogs: SipDialogs, now: float = 0.0, data: bytes = fixture("invite")) -> Dialog:
    """Receive an INVITE: a 100 Trying and an `OpenCall`; return its dialog."""
    actions = dialogs.receive(data, PHONE, now)
    assert statuses(actions) == [100]
    assert isinstance(actions[-1], OpenCall)
    return actions[-1].dialog


def answer(dialogs: SipDialogs, now: float = 0.0) -> tuple[Dialog, Response]:
    """An INVITE, answered: its dialog and the 200 OK."""
    dialog = invite(dialogs, now)
    (ok,) = responses(dialogs.answered(dialog, LOCAL, now))
    assert ok.status == 200
    return dialog, ok


def in_dialog(name: str, dialog: Dialog) -> bytes:
    """A captured in-dialog request with the server's To tag (the capture's was "cap1")."""
    return fixture(name).replace(b"tag=cap1", b"tag=" + dialog.local_tag.encode())


def test_invite_ack_bye() -> None:
    dialogs = SipDialogs()
    dialog = invite(dialogs)
    assert (dialog.call_id, dialog.conversation_id, dialog.state) == (CALL_ID, CALL_ID, "answering")
    assert dialog.chosen.encoding == "mulaw" and dialogs.deadline() is None
    (ok,) = responses(dialogs.answered(dialog, LOCAL, 0.2))
    assert parse_name_addr(ok.headers.get("To") or "").tag == dialog.local_tag
    assert ok.headers.get("Contact") == "<sip:palabre@127.0.0.1:25060>"
    answer_sdp = sdp.parse(ok.body)
    assert answer_sdp.media[0].port == 20000 and answer_sdp.media[0].direction == "recvonly"
    assert dialog.state == "answered" and dialogs.deadline() == pytest.approx(0.7)
    assert dialogs.receive(fixture("ack"), PHONE, 0.3) == []  # the capture's tag: ACKs are not checked
    assert dialog.state == "confirmed" and dialogs.deadline() is None
    assert dialogs.tick(5.0) == []
    bye = dialogs.receive(in_dialog("bye", dialog), PHONE, 10.0)
    assert statuses(bye) == [200] and bye[-1] == EndCall(dialog, "the caller hung up")
    assert dialog.state == "ended" and not dialogs.calls
    assert sent(dialogs.receive(in_dialog("bye", dialog), PHONE, 11.0)) == sent(bye[:1])  # repeated
    new_bye = in_dialog("bye", dialog).replace(b"z9hG4bK39ae", b"z9hG4bK0000")
    assert statuses(dialogs.receive(new_bye, PHONE, 11.0)) == [481]


def test_cancel_before_the_answer() -> None:
    dialogs = SipDialogs()
    dialog = invite(dialogs, data=fixture("invite-cancelled"))
    actions = dialogs.receive(fixture("cancel"), PHONE, 1.0)
    cancel_ok, terminated = responses(actions)
    assert (cancel_ok.status, cancel_ok.cseq) == (200, (23434, "CANCEL"))
    assert (terminated.status, terminated.cseq) == (487, (23434, "INVITE"))
    assert actions[-1] == EndCall(dialog, "cancelled") and not dialogs.calls
    assert dialogs.answered(dialog, LOCAL, 2.0) == []  # the session opened too late: nothing to say
    assert dialogs.refused(dialog, 486, "full", 2.0) == []
    assert sent(dialogs.receive(fixture("cancel"), PHONE, 3.0)) == sent(actions[:1])
    assert sent(dialogs.receive(fixture("invite-cancelled"), PHONE, 3.0)) == sent(actions[1:2])


def test_a_cancel_of_another_transaction() -> None:
    dialogs = SipDialogs()
    invite(dialogs, data=fixture("invite-cancelled"))
    other = fixture("cancel").replace(b"z9hG4bK6093", b"z9hG4bK0000")
    assert statuses(dialogs.receive(other, PHONE, 1.0)) == [481]
    assert dialogs.calls


def test_a_retransmitted_invite_gets_the_cached_response() -> None:
    dialogs = SipDialogs()
    dialog = invite(dialogs)
    again = dialogs.receive(fixture("invite"), PHONE, 0.1)
    assert statuses(again) == [100] and len(again) == 1  # no second call
    (ok,) = sent(dialogs.answered(dialog, LOCAL, 0.2))
    assert sent(dialogs.receive(fixture("invite"), PHONE, 0.3)) == [ok]
    dialogs.receive(fixture("ack"), PHONE, 0.4)
    # 64·T1 later the response is forgotten: the same INVITE is now one too many for the call.
    assert statuses(dialogs.receive(fixture("invite"), PHONE, 0.2 + 32.1)) == [482]


def test_the_200_is_repeated_until_the_ack_then_given_up() -> None:
    dialogs = SipDialogs()
    dialog, ok = answer(dialogs)
    assert dialogs.tick(0.49) == []
    times: list[float] = []
    actions: list[Action] = []
    while (deadline := dialogs.deadline()) is not None:
        actions = dialogs.tick(deadline)
        if dialog.state == "answered":
            assert responses(actions) == [ok]
            times.append(deadline)
    assert times == pytest.approx([0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    bye, end = actions
    assert isinstance(bye, Send) and end == EndCall(dialog, "no ACK")
    request = parse(bye.data)
    assert isinstance(request, Request) and request.method == "BYE"
    assert request.uri == "sip:caller-0x55ca123d4ad0@127.0.0.1:25070"  # the caller's Contact
    assert request.headers.get("To") == dialog.invite.headers.get("From")
    assert parse_name_addr(request.headers.get("From") or "").tag == dialog.local_tag
    assert not dialogs.calls


def test_shorter_timers() -> None:
    dialogs = SipDialogs(Timers(t1=0.05, t2=0.1))
    answer(dialogs)
    times = []
    while (deadline := dialogs.deadline()) is not None:
        dialogs.tick(deadline)
        times.append(deadline)
    assert times[:4] == pytest.approx([0.05, 0.15, 0.25, 0.35]) and times[-1] > 64 * 0.05


def test_reinvites() -> None:
    dialogs = SipDialogs()
    dialog = invite(dialogs)
    assert statuses(dialogs.receive(in_dialog("reinvite", dialog), PHONE, 0.1)) == [491]  # still answering
    (ok,) = responses(dialogs.answered(dialog, LOCAL, 0.2))
    first = sdp.parse(ok.body)
    dialogs.receive(fixture("ack"), PHONE, 0.3)
    assert statuses(dialogs.receive(in_dialog("reinvite", dialog), PHONE, 1.0)) == [491]  # the kept one
    same = dialogs.receive(in_dialog("reinvite", dialog).replace(b"z9hG4bK", b"z9hG4bKa"), PHONE, 1.0)
    assert same[0] == MediaChanged(dialog) and statuses(same) == [200]
    assert sdp.parse(responses(same)[0].body) == first and dialog.state == "answered"
    moved = in_dialog("reinvite-hold", dialog).replace(b"m=audio 4812", b"m=audio 4900")
    hold = dialogs.receive(moved, PHONE, 2.0)
    assert dialog.chosen.remote_port == 4900 and statuses(hold) == [200]
    assert sdp.parse(responses(hold)[0].body).origin.split()[2] == "1"  # recvonly still: no change
    pcma_only = in_dialog("reinvite", dialog).replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")
    refused = dialogs.receive(pcma_only.replace(b"CSeq: 19749", b"CSeq: 19761"), PHONE, 3.0)
    assert statuses(refused) == [488] and dialog.chosen.encoding == "mulaw" and dialogs.calls
    stranger = fixture("reinvite").replace(b"z9hG4bK", b"z9hG4bKy")  # the capture's tag
    assert statuses(dialogs.receive(stranger, PHONE, 3.0)) == [481]


def test_a_second_invite_of_a_call_is_a_loop() -> None:
    dialogs = SipDialogs()
    invite(dialogs)
    forked = fixture("invite").replace(b"z9hG4bK32", b"z9hG4bK99")
    assert statuses(dialogs.receive(forked, PHONE, 0.1)) == [482]


def test_unknown_calls_options_and_other_methods() -> None:
    dialogs = SipDialogs()
    assert statuses(dialogs.receive(fixture("bye"), PHONE, 0.0)) == [481]
    assert dialogs.receive(fixture("ack"), PHONE, 0.0) == []
    (options,) = responses(dialogs.receive(fixture("options"), PHONE, 0.0))
    assert options.status == 200 and options.headers.get("Allow") == ALLOW
    assert options.headers.get("Accept") == "application/sdp"
    assert parse_name_addr(options.headers.get("To") or "").tag
    (register,) = responses(dialogs.receive(fixture("options").replace(b"OPTIONS", b"REGISTER"), PHONE, 0.0))
    assert register.status == 405 and register.headers.get("Allow") == ALLOW
    for junk in (b"\r\n\r\n", b"not SIP at all", b"SIP/2.0 200 OK\r\n\r\n"):
        assert dialogs.receive(junk, PHONE, 0.0) == []
    assert not dialogs.calls


def test_offers_without_g711() -> None:
    dialogs = SipDialogs()
    head = fixture("invite-pcma").split(b"\r\n\r\n")[0]
    late_offer = head.replace(b"Content-Length: 315", b"Content-Length: 0") + b"\r\n\r\n"
    assert statuses(dialogs.receive(late_offer, PHONE, 0.0)) == [100, 488]
    g722 = fixture("invite").replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9 9 101")
    trying, refused = responses(dialogs.receive(g722, PHONE, 0.0))
    assert trying.status == 100
    assert refused.status == 488 and "PCMU" in (refused.headers.get("Warning") or "")
    assert not dialogs.calls


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.OVERLOADED, 486),
        (ErrorCode.UNAVAILABLE, 503),
        (ErrorCode.UNAUTHORIZED, 403),
        (ErrorCode.FORBIDDEN, 403),
        (ErrorCode.BAD_START, 403),
        (ErrorCode.BAD_OFFER, 488),
        (ErrorCode.INTERNAL, 500),
    ],
)
def test_refusal_status(code: ErrorCode, status: int) -> None:
    assert refusal_status(ProtocolError(code, "no")) == status


def test_a_refused_call() -> None:
    dialogs = SipDialogs()
    dialog = invite(dialogs)
    actions = dialogs.refused(dialog, 486, 'the "tenant" is full', 0.5)
    (busy,) = responses(actions)
    assert busy.status == 486 and busy.cseq == (19748, "INVITE")
    assert busy.headers.get("Warning") == "399 palabre \"the 'tenant' is full\""
    assert actions[-1] == EndCall(dialog, "refused (486)") and not dialogs.calls
    assert sent(dialogs.receive(fixture("invite"), PHONE, 1.0)) == sent(actions[:1])


def test_hanging_up() -> None:
    dialogs = SipDialogs()
    ringing = invite(dialogs, data=fixture("invite-cancelled"))
    assert dialogs.hang_up(ringing, "the server stops") == [EndCall(ringing, "the server stops")]
    dialog, _ = answer(dialogs)
    dialogs.receive(fixture("ack"), PHONE, 0.1)
    bye, end = dialogs.hang_up(dialog, "no RTP for 60 s")
    assert isinstance(bye, Send) and bye.addr == PHONE and end == EndCall(dialog, "no RTP for 60 s")
    first = parse(bye.data)
    assert isinstance(first, Request) and first.method == "BYE" and first.call_id == CALL_ID
    assert dialogs.hang_up(dialog, "again") == [] and not dialogs.calls


def test_an_ack_with_sdp_moves_the_media() -> None:
    dialogs = SipDialogs()
    dialog, _ = answer(dialogs)
    body = fixture("invite").split(b"\r\n\r\n", 1)[1].replace(b"m=audio 4812", b"m=audio 4950")
    ack = fixture("ack").replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode()) + body
    assert dialogs.receive(ack, PHONE, 0.1) == [MediaChanged(dialog)]
    assert dialog.chosen.remote_port == 4950 and dialog.state == "confirmed"
