"""SIP (RFC 3261) messages: parse and serialize requests and responses, build the responses a UAS sends.

Pure, no I/O; the dialog rules are `sip_dialog.py`, the socket side `server/transports/sip.py`.
One UDP datagram is one message:

    INVITE sip:test@127.0.0.1:5060 SIP/2.0
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5f330ba59dcbefa6;rport
    From: <sip:caller@127.0.0.1>;tag=f42588882904d4f8
    To: <sip:test@127.0.0.1:5060>
    Call-ID: 2bda0fcad00ab870
    CSeq: 58229 INVITE
    Content-Type: application/sdp
    Content-Length: 339

    v=0 ...

`parse(data)` returns a `Request` or a `Response`; `serialize(message)` is its inverse (it writes
the Content-Length of the body). Header names are stored in their canonical form, compact
forms expanded (`i` → Call-ID, `v` → Via, ...); the values of Via, Contact, Route and
Record-Route headers that list several comma-separated values become one header each, so
`headers.get_all("Via")` lists the hops, top first. Lines may end in CRLF or LF, continuation
lines are joined. Without a Content-Length, the body is the rest of the datagram.

A message that cannot be read is a `ProtocolError`: FRAME_TOO_LARGE (over `max_bytes`),
UNKNOWN_TYPE (no request or status line), BAD_START (a malformed header, a Content-Length
that does not match the body, or a request whose Via, From, To, Call-ID or CSeq is missing or
malformed; so the accessors of a parsed `Request` and `make_response` do not fail).
`make_response(request, status)` copies what RFC 3261 §8.2.6 says a response copies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stream.errors import ErrorCode, ProtocolError

VERSION = "SIP/2.0"
MAX_MESSAGE_BYTES = 65_535
"""The largest UDP datagram; real messages are under 1500 bytes."""
MAX_HEADERS = 200

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    503: "Service Unavailable",
}

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        *COMPACT_FORMS.values(),
        "Accept",
        "Allow",
        "Call-Info",
        "Contact",
        "CSeq",
        "Max-Forwards",
        "Record-Route",
        "Require",
        "Route",
        "Server",
        "Unsupported",
        "User-Agent",
        "WWW-Authenticate",
    )
}
_LISTS = frozenset(("via", "contact", "route", "record-route"))
"""Headers whose comma-separated values are split into one header each."""

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+")
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~\-]+) (\S+) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)")


def canonical_name(name: str) -> str:
    """A header name in its canonical spelling: compact forms expanded, known names recapitalised."""
    lower = name.lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


@dataclass(frozen=True, slots=True)
class Headers:
    """The ordered headers of a message; lookups ignore case and compact forms."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        """The first value of a header, or None."""
        key = canonical_name(name).lower()
        return next((value for n, value in self.items if n.lower() == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, in order."""
        key = canonical_name(name).lower()
        return [value for n, value in self.items if n.lower() == key]

    def without(self, *names: str) -> Headers:
        """These headers less the named ones."""
        keys = {canonical_name(n).lower() for n in names}
        return Headers(tuple((n, v) for n, v in self.items if n.lower() not in keys))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Request:
    """A SIP request."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) of the CSeq header."""
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def branch(self) -> str:
        """The branch parameter of the top Via: names the transaction."""
        vias = self.headers.get_all("Via")
        if not vias:
            return ""
        return parse_via(vias[0]).params.get("branch", "")


@dataclass(frozen=True, slots=True)
class Response:
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")


Message = Request | Response


# --- parse -----------------------------------------------------------------------------------


def is_keepalive(data: bytes) -> bool:
    """A CRLF keep-alive (RFC 5626 §4.4.1): whitespace only, not a message."""
    return len(data) <= 4 and not data.strip(b"\r\n")


def parse(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """One SIP message from one datagram."""
    if len(data) > max_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"SIP message of {len(data)} bytes exceeds {max_bytes}"
        )
    head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_START, "SIP headers are not UTF-8") from None
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    start, header_lines = lines[0], lines[1:]
    headers = Headers(tuple(_parse_headers(header_lines)))
    body = _body(headers, body)
    if start.startswith(VERSION + " "):
        status = _STATUS_LINE.fullmatch(start)
        if status is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"bad SIP status line {start[:60]!r}")
        return Response(int(status.group(1)), status.group(2), headers, body)
    request = _REQUEST_LINE.fullmatch(start)
    if request is None or ":" not in request.group(2):
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"not a SIP request line: {start[:60]!r}")
    method = request.group(1).upper()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not headers.get(name):
            raise ProtocolError(ErrorCode.BAD_START, f"SIP {method} without a {name} header")
    _, cseq_method = parse_cseq(headers.get("CSeq") or "")
    if cseq_method != method:
        raise ProtocolError(ErrorCode.BAD_START, f"CSeq method {cseq_method} in a {method} request")
    parse_via(headers.get_all("Via")[0])
    parse_name_addr(headers.get("From") or "")
    parse_name_addr(headers.get("To") or "")
    return Request(method, request.group(2), headers, body)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4 :]
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    return data.rstrip(b"\r\n"), b""


def _parse_headers(lines: list[str]) -> Iterator[tuple[str, str]]:
    joined: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and joined:
            joined[-1] += " " + line.strip()
        else:
            joined.append(line)
    if len(joined) > MAX_HEADERS:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"more than {MAX_HEADERS} SIP headers")
    for line in joined:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(ErrorCode.BAD_START, f"bad SIP header line {line[:60]!r}")
        name = canonical_name(name)
        value = value.strip(" \t")
        if name.lower() in _LISTS and value != "*":
            for item in split_list(value):
                yield name, item
        else:
            yield name, value


def _body(headers: Headers, rest: bytes) -> bytes:
    length = headers.get("Content-Length")
    if length is None:
        return rest
    if not _digits(length) or len(length) > 6:
        raise ProtocolError(ErrorCode.BAD_START, f"bad Content-Length {length[:20]!r}")
    size = int(length)
    if size > len(rest):
        raise ProtocolError(ErrorCode.BAD_START, f"Content-Length {size} but {len(rest)} bytes of body")
    return rest[:size]


def split_list(value: str) -> list[str]:
    """The comma-separated values of a header, commas in quotes and <URIs> left alone."""
    items: list[str] = []
    depth, quoted, start, i = 0, False, 0, 0
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return [item for item in items if item]


# --- header values ---------------------------------------------------------------------------


def parse_params(text: str) -> dict[str, str]:
    """`;a=1;b` → {"a": "1", "b": ""} (names lower-cased)."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name:
            params[name] = value.strip().strip('"')
    return params


def parse_cseq(value: str) -> tuple[int, str]:
    """`58229 INVITE` → (58229, "INVITE")."""
    number, _, method = value.strip().partition(" ")
    method = method.strip().upper()
    if not _digits(number) or len(number) > 10 or int(number) >= 2**31 or not _TOKEN.fullmatch(method):
        raise ProtocolError(ErrorCode.BAD_START, f"bad CSeq {value[:40]!r}")
    return int(number), method


@dataclass(frozen=True, slots=True)
class Via:
    """One Via hop: `SIP/2.0/UDP host:port;branch=...;rport`."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str]


def parse_via(value: str) -> Via:
    sent, _, params = value.partition(";")
    protocol, _, by = sent.strip().partition(" ")
    parts = protocol.replace(" ", "").split("/")
    host, port = _host_port(by.strip())
    if len(parts) != 3 or parts[0].upper() != "SIP" or not host:
        raise ProtocolError(ErrorCode.BAD_START, f"bad Via {value[:60]!r}")
    return Via(parts[2].upper(), host, port, parse_params(params))


@dataclass(frozen=True, slots=True)
class SipUri:
    """`sip:user@host:port;params` (the parts Palabre uses)."""

    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str]


def parse_uri(uri: str) -> SipUri:
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips", "tel"):
        raise ProtocolError(ErrorCode.BAD_START, f"not a SIP URI: {uri[:60]!r}")
    rest, _, _headers = rest.partition("?")
    address, _, params = rest.partition(";")
    if scheme.lower() == "tel":
        return SipUri("tel", address, "", None, parse_params(params))
    user, at, hostport = address.rpartition("@")
    host, port = _host_port(hostport)
    if not host:
        raise ProtocolError(ErrorCode.BAD_START, f"SIP URI without a host: {uri[:60]!r}")
    return SipUri(scheme.lower(), user.partition(":")[0] if at else "", host, port, parse_params(params))


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: `"Name" <uri>;tag=...`."""

    display: str
    uri: str
    params: dict[str, str]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    display, rest = "", value
    if value.startswith('"'):
        i = 1
        while i < len(value) and value[i] != '"':
            i += 2 if value[i] == "\\" else 1
        if i >= len(value):
            raise ProtocolError(ErrorCode.BAD_START, f"unclosed quote in {value[:60]!r}")
        display, rest = value[1:i].replace('\\"', '"'), value[i + 1 :]
    if "<" in rest:
        before, _, inside = rest.partition("<")
        uri, close, params = inside.partition(">")
        if not close:
            raise ProtocolError(ErrorCode.BAD_START, f"unclosed <URI> in {value[:60]!r}")
        return NameAddr(display or before.strip(), uri.strip(), parse_params(params))
    uri, _, params = rest.partition(";")  # a bare URI: its ;params belong to the header
    return NameAddr(display, uri.strip(), parse_params(params))


def _host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if port and (not _digits(port) or len(port) > 5 or int(port) > 65535):
        raise ProtocolError(ErrorCode.BAD_START, f"bad port in {text[:60]!r}")
    return host, int(port) if port else None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def with_tag(value: str, tag: str) -> str:
    """A To header value with a tag added (unchanged when it has one)."""
    if parse_name_addr(value).tag is not None:
        return value
    if "<" not in value:  # a bare URI: bracket it, so that the tag is a header parameter
        uri, semicolon, params = value.partition(";")
        value = f"<{uri.strip()}>{semicolon}{params}"
    return f"{value};tag={tag}"


def with_received(via: str, host: str, port: int) -> str:
    """The top Via of a request as the UAS answers it (RFC 3261 §18.2.1, RFC 3581).

    Adds `received=` when the source address differs from the Via's host and fills an
    empty `rport` with the source port.
    """
    sent, _, params = via.partition(";")
    parsed = parse_via(via)
    out: list[str] = []
    for param in params.split(";") if params else []:
        name = param.partition("=")[0].strip().lower()
        if name == "received":
            continue
        out.append(f"rport={port}" if name == "rport" else param)
    if parsed.host != host or "rport" in parsed.params:
        out.append(f"received={host}")
    return ";".join([sent, *out])


# --- build and serialize ---------------------------------------------------------------------


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request`: its Via, From, To, Call-ID and CSeq, then `headers`.

    `to_tag` is added to the To header (a UAS's responses other than 100 carry its tag);
    `source`, the address the request came from, marks the top Via with `received`/`rport`.
    Record-Route is copied into responses that set up a dialog (1xx/2xx to INVITE).
    """
    out: list[tuple[str, str]] = []
    for i, via in enumerate(request.headers.get_all("Via")):
        out.append(("Via", with_received(via, *source) if i == 0 and source is not None else via))
    out.append(("From", request.headers.get("From") or ""))
    to = request.headers.get("To") or ""
    out.append(("To", with_tag(to, to_tag) if to_tag is not None and status > 100 else to))
    out.append(("Call-ID", request.call_id))
    out.append(("CSeq", request.headers.get("CSeq") or ""))
    if request.method == "INVITE" and 100 < status < 300:
        out += [("Record-Route", value) for value in request.headers.get_all("Record-Route")]
    out += headers
    return Response(status, reason or REASONS.get(status, ""), Headers(tuple(out)), body)


def serialize(message: Message) -> bytes:
    """The bytes of a message, with a Content-Length that matches its body."""
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} {VERSION}"
    else:
        start = f"{VERSION} {message.status} {message.reason}"
    lines = [start]
    lines += [
        f"{name}: {value}" if value else f"{name}:"
        for name, value in message.headers.without("Content-Length")
    ]
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + message.body
