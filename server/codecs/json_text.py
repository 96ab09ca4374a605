"""Decoding a client's JSON text message, with the same limits on every JSON protocol.

Every codec that reads JSON from a client (`/v1/stream`, Twilio Media Streams, the OpenAI Realtime
events) decodes it here: at most `max_bytes` UTF-8 bytes, one JSON object, nested at most
`MAX_DEPTH` arrays/objects deep, and no `NaN` or `Infinity` (Python's `json` accepts them; they are
not JSON). A failure is a `ProtocolError`: FRAME_TOO_LARGE (closing with MESSAGE_TOO_BIG) or
BAD_JSON.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from stream.errors import CloseCode, ErrorCode, ProtocolError

MAX_DEPTH = 32
"""Deepest nesting of JSON arrays/objects accepted in a client message (the top object is level 1)."""

JsonObject = dict[str, Any]


def load_object(text: str | bytes, max_bytes: int) -> JsonObject:
    """Decode `text` as one JSON object within the size and depth limits."""
    if isinstance(text, str):
        # A str of n characters holds n to 4n UTF-8 bytes: only count when it may matter.
        size = len(text) if len(text) * 4 <= max_bytes else len(text.encode("utf-8", "surrogatepass"))
    else:
        size = len(text)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"message of {size} bytes exceeds {max_bytes}",
            close=CloseCode.MESSAGE_TOO_BIG,
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, f"JSON nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, huge integers
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, f"message must be a JSON object, not {type(value).__name__}")
    if _deeper_than(value, MAX_DEPTH):
        raise ProtocolError(ErrorCode.BAD_JSON, f"JSON nested deeper than {MAX_DEPTH}")
    return value


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _deeper_than(value: JsonObject, limit: int) -> bool:
    """Whether arrays/objects nest more than `limit` levels (the top object is level 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
