"""server/codecs/sip.py: SIP messages, against what a real softphone (baresip) sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.codecs import sip
from server.codecs.sip import Request, Response, make_response, parse, serialize
from stream.errors import ErrorCode, ProtocolError
from tests.server.sip_fixtures import CALL_ID, SIP_MESSAGES, fixture

FUZZ = settings(max_examples=300, deadline=None)


def request(name: str) -> Request:
    message = parse(fixture(name))
    assert isinstance(message, Request)
    return message


def test_the_invite_of_a_softphone() -> None:
    invite = request("invite")
    assert (invite.method, invite.uri) == ("INVITE", "sip:test@127.0.0.1:25060")
    assert invite.call_id == CALL_ID
    assert invite.cseq == (19748, "INVITE")
    assert invite.branch == "z9hG4bK32fae6a230b38819"
    via = sip.parse_via(invite.headers.get_all("Via")[0])
    assert (via.transport, via.host, via.port, via.params) == (
        "UDP",
        "127.0.0.1",
        25070,
        {"branch": "z9hG4bK32fae6a230b38819", "rport": ""},
    )
    sender = sip.parse_name_addr(invite.headers.get("from") or "")
    assert (sender.uri, sender.tag) == ("sip:caller@127.0.0.1", "28e29b0ab787970d")
    assert sip.parse_name_addr(invite.headers.get("To") or "").tag is None
    assert invite.headers.get("Content-Type") == "application/sdp"
    assert invite.headers.get("Supported") == ""
    assert len(invite.body) == 339
    assert invite.body.startswith(b"v=0\r\n") and invite.body.endswith(b"a=ptime:20\r\n")
    uri = sip.parse_uri(invite.uri)
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", "test", "127.0.0.1", 25060)


@pytest.mark.parametrize("name", SIP_MESSAGES)
def test_serialize_is_the_inverse_of_parse(name: str) -> None:
    assert serialize(parse(fixture(name))) == fixture(name)


def test_every_method_of_a_call() -> None:
    methods = [(request(name).method, request(name).cseq[0]) for name in SIP_MESSAGES]
    assert methods == [
        ("OPTIONS", 60613),
        ("INVITE", 19748),
        ("ACK", 19748),
        ("INVITE", 19749),
        ("INVITE", 19750),
        ("BYE", 19751),
        ("INVITE", 23434),
        ("CANCEL", 23434),
        ("INVITE", 54413),
    ]
    cancel, cancelled = request("cancel"), request("invite-cancelled")
    assert cancel.branch == cancelled.branch and cancel.call_id == cancelled.call_id
    assert sip.parse_name_addr(request("bye").headers.get("To") or "").tag == "cap1"


def test_compact_forms_and_folded_lines() -> None:
    compact = (
        b"BYE sip:cap@127.0.0.1:25060 SIP/2.0\n"
        b"v: SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bK39ae33865fef8f79;rport\n"
        b"Max-Forwards: 70\n"
        b"t: <sip:test@127.0.0.1:25060>\n ;tag=cap1\n"
        b"f: <sip:caller@127.0.0.1>;tag=28e29b0ab787970d\n"
        b"i: d676ba7125088b5f\n"
        b"CSEQ: 19751 BYE\n"
        b"l: 0\n\n"
    )
    bye = request("bye")
    parsed = parse(compact)
    assert isinstance(parsed, Request)
    for name in ("Via", "From", "Call-ID", "CSeq", "Content-Length"):
        assert parsed.headers.get(name) == bye.headers.get(name)
    to = sip.parse_name_addr(parsed.headers.get("To") or "")
    assert (to.uri, to.tag) == ("sip:test@127.0.0.1:25060", "cap1")  # from the continuation line
    assert parsed.call_id == bye.call_id and parsed.cseq == bye.cseq and parsed.branch == bye.branch
    assert serialize(parsed).startswith(b"BYE sip:cap@127.0.0.1:25060 SIP/2.0\r\nVia: SIP/2.0/UDP")


def test_lists_split_into_one_header_each() -> None:
    data = fixture("bye").replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bK39ae33865fef8f79;rport\r\n",
        b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bKb\r\n"
        b'Contact: "Doe, John" <sip:john@10.0.0.1>;expires=60, <sip:j@10.0.0.2>\r\n',
    )
    bye = request_from(data)
    assert bye.headers.get_all("Via") == [
        "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa",
        "SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bKb",
    ]
    assert bye.branch == "z9hG4bKa"
    contacts = [sip.parse_name_addr(c) for c in bye.headers.get_all("m")]
    assert [(c.display, c.uri) for c in contacts] == [
        ("Doe, John", "sip:john@10.0.0.1"),
        ("", "sip:j@10.0.0.2"),
    ]


def request_from(data: bytes) -> Request:
    message = parse(data)
    assert isinstance(message, Request)
    return message


def test_body_without_content_length_runs_to_the_end() -> None:
    data = fixture("invite").replace(b"Content-Length: 339\r\n", b"")
    assert request_from(data).body == request("invite").body


def test_responses() -> None:
    response = parse(b"SIP/2.0 180 Ringing\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(response, Response)
    assert (response.status, response.reason, response.call_id, response.cseq) == (
        180,
        "Ringing",
        "x",
        (1, "INVITE"),
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.UNKNOWN_TYPE),
        (b"hello world\r\n\r\n", ErrorCode.UNKNOWN_TYPE),
        (b"SIP/2.0 99 Odd\r\n\r\n", ErrorCode.UNKNOWN_TYPE),
        (b"INVITE nouri SIP/2.0\r\nVia: x\r\n\r\n", ErrorCode.UNKNOWN_TYPE),
        (fixture("bye").replace(b"Call-ID: d676ba7125088b5f\r\n", b""), ErrorCode.BAD_START),
        (fixture("bye").replace(b"CSeq: 19751 BYE", b"CSeq: 19751 INVITE"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"CSeq: 19751 BYE", b"CSeq: x BYE"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"Max-Forwards: 70", b"Max Forwards 70"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"Via: SIP/2.0/UDP", b"Via: HTTP/1.1/UDP"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"Content-Length: 0", b"Content-Length: 10"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"Content-Length: 0", b"Content-Length: -1"), ErrorCode.BAD_START),
        (fixture("bye").replace(b"baresip", b"\xffbaresip"), ErrorCode.BAD_START),
        (fixture("bye") + b"x" * 70_000, ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_bad_messages(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse(data)
    assert raised.value.code is code


def test_keepalives() -> None:
    assert sip.is_keepalive(b"\r\n\r\n") and sip.is_keepalive(b"\r\n")
    assert not sip.is_keepalive(fixture("ack"))


def test_make_response_copies_what_the_rfc_says() -> None:
    invite = request_from(
        fixture("invite").replace(
            b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nRecord-Route: <sip:proxy.example;lr>\r\n"
        )
    )
    ok = make_response(
        invite,
        200,
        to_tag="abc",
        source=("127.0.0.1", 25070),
        headers=[("Contact", "<sip:palabre@127.0.0.1:5060>")],
        body=b"v=0\r\n",
    )
    assert serialize(ok) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bK32fae6a230b38819;rport=25070;received=127.0.0.1\r\n"
        b"From: <sip:caller@127.0.0.1>;tag=28e29b0ab787970d\r\n"
        b"To: <sip:test@127.0.0.1:25060>;tag=abc\r\n"
        b"Call-ID: d676ba7125088b5f\r\n"
        b"CSeq: 19748 INVITE\r\n"
        b"Record-Route: <sip:proxy.example;lr>\r\n"
        b"Contact: <sip:palabre@127.0.0.1:5060>\r\n"
        b"Content-Length: 5\r\n\r\nv=0\r\n"
    )
    trying = make_response(invite, 100, to_tag="abc")
    assert trying.reason == "Trying" and trying.headers.get("To") == "<sip:test@127.0.0.1:25060>"
    assert trying.headers.get("Record-Route") is None
    bye_ok = make_response(request("bye"), 200, to_tag="other")
    assert bye_ok.headers.get("To") == "<sip:test@127.0.0.1:25060>;tag=cap1"  # its tag is kept
    via = make_response(request("bye"), 481, source=("10.1.2.3", 5070)).headers.get("Via")
    assert via == "SIP/2.0/UDP 127.0.0.1:25070;branch=z9hG4bK39ae33865fef8f79;rport=5070;received=10.1.2.3"


def test_header_values() -> None:
    assert sip.with_tag("sip:a@b;x=1", "t") == "<sip:a@b>;x=1;tag=t"
    quoted = sip.parse_name_addr('"A <b> \\"c\\"" <sip:a@b>;tag=1')
    assert (quoted.display, quoted.uri, quoted.tag) == ('A <b> "c"', "sip:a@b", "1")
    assert sip.parse_name_addr("Bob <sip:bob@b>").display == "Bob"
    assert sip.parse_uri("sips:[::1]:5061;transport=tls").host == "::1"
    assert sip.parse_uri("tel:+15550100").user == "+15550100"
    assert sip.parse_cseq("1 invite") == (1, "INVITE")
    for bad in ("http://x", "sip:", "sip:a@b:99999", "sip:a@b:5²"):
        with pytest.raises(ProtocolError):
            sip.parse_uri(bad)


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_any_bytes(data: bytes) -> None:
    try:
        message = parse(data)
    except ProtocolError:
        return
    assert isinstance(message, Request | Response)
    _ = message.call_id, message.headers.get_all("Via")


@FUZZ
@given(
    st.sampled_from(SIP_MESSAGES),
    st.lists(st.tuples(st.integers(0, 900), st.binary(max_size=6)), max_size=4),
    st.integers(0, 900),
)
def test_fuzz_damaged_messages(name: str, edits: list[tuple[int, bytes]], cut: int) -> None:
    """Real messages with bytes replaced and cut short: a message or a ProtocolError, never a crash."""
    data = bytearray(fixture(name))
    for position, replacement in edits:
        data[position : position + len(replacement)] = replacement
    try:
        message = parse(bytes(data[: len(data) - cut]))
    except ProtocolError:
        return
    serialize(message)
    if isinstance(message, Request):  # what parse checked, the accessors and responses can read
        _ = message.cseq, message.branch
        serialize(make_response(message, 200, to_tag="x", source=("127.0.0.1", 5060)))
