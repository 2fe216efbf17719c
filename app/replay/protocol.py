"""Binance's live (un)subscription protocol on the stream endpoints, as
documented in binance-spot-api-docs/web-socket-streams.md ("Live
Subscribing/Unsubscribing to streams", "Error Messages").

Replies are `{"result": ..., "id": ...}` or `{"error": {"code", "msg"}, "id": ...}`.
The documented error texts are reproduced as written, including serde's
"at line L column C" positions, which we compute from the request text.
Two situations the table does not cover use wording of our own: a stream
name Binance would not recognise (upper-case symbol, unknown stream type)
gets code 2 "Invalid request: invalid stream", and going over the
1024-streams-per-connection limit gets code 2 "Invalid request: too many
streams".
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from app.candles import INTERVALS

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
MAX_STREAMS = 1024

# Stream names Binance serves on stream.binance.com (symbols lower-case).
# Only kline streams are replayed; the others are accepted and stay silent.
_INTERVALS = "|".join(INTERVALS)
STREAM_RE = re.compile(
    rf"^[a-z0-9]+@(kline_({_INTERVALS})|aggTrade|trade|bookTicker|miniTicker|ticker"
    r"|ticker_(1h|4h|1d)|avgPrice|depth(5|10|20)?(@100ms|@1000ms)?)$"
    r"|^!(miniTicker@arr|ticker@arr|ticker_(1h|4h|1d)@arr)$")
# ids: 64-bit signed integers, alphanumeric strings up to 36, or null.
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")


class RequestError(Exception):
    def __init__(self, code: int, msg: str, id_=None):
        super().__init__(msg)
        self.code, self.msg, self.id = code, msg, id_

    def reply(self) -> dict:
        return {"error": {"code": self.code, "msg": self.msg}, "id": self.id}


@dataclass(frozen=True)
class Request:
    method: str
    params: list
    id: object


def valid_stream(name) -> bool:
    return isinstance(name, str) and bool(STREAM_RE.match(name))


def _position(text: str, offset: int) -> str:
    """serde's "line L column C": where the last character it consumed
    (0-based `offset`) is."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"at line {line} column {column}"


def _valid_id(value) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -2**63 <= value < 2**63
    return isinstance(value, str) and bool(_ID_RE.match(value))


def parse(text: str) -> Request:
    """Parse and validate one control message; raises RequestError."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
    if not isinstance(msg, dict):
        raise RequestError(3, "Invalid JSON: expected value at line 1 column 1")
    id_ = msg.get("id")
    if "method" not in msg:
        raise RequestError(2, f"Invalid request: missing field `method` {_position(text, len(text.rstrip()) - 1)}",
                           id_ if _valid_id(id_) else None)
    method = msg["method"]
    if method not in METHODS:
        # serde reports the position of the value's last character.
        found = re.search(r'"method"\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\s]+)', text)
        where = _position(text, found.end() - 1) if found else "at line 1 column 1"
        variant = method if isinstance(method, str) else json.dumps(method)
        expected = ", ".join(f"`{m}`" for m in METHODS)
        raise RequestError(2, f"Invalid request: unknown variant `{variant}`, expected one of {expected} {where}",
                           id_ if _valid_id(id_) else None)
    if "id" not in msg or not _valid_id(id_):
        raise RequestError(2, "Invalid request: request ID must be an unsigned integer")
    params = msg.get("params", [])
    if not isinstance(params, list):
        raise RequestError(2, "Invalid request: params must be an array", id_)
    allowed = {"SUBSCRIBE": None, "UNSUBSCRIBE": None, "LIST_SUBSCRIPTIONS": 0,
               "SET_PROPERTY": 2, "GET_PROPERTY": 1}[method]
    if allowed is not None and len(params) > allowed:
        raise RequestError(2, "Invalid request: too many parameters", id_)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(valid_stream(p) for p in params):
            raise RequestError(2, "Invalid request: invalid stream", id_)
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        if not params or not isinstance(params[0], str):
            raise RequestError(2, "Invalid request: property name must be a string", id_)
        if params[0] != "combined":
            raise RequestError(0, "Unknown property", id_)
        if method == "SET_PROPERTY" and (len(params) < 2 or not isinstance(params[1], bool)):
            raise RequestError(1, "Invalid value type: expected Boolean", id_)
    return Request(method, params, id_)
