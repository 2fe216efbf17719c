"""What /ws/price clients may say: query parameters and messages, parsed
and validated into plain values. No I/O here; app/clients/ acts on them.
Every refusal is a ClientError whose text goes back to the client."""
import json

from .candles import normalize_symbol, parse_stream_name

MAX_BATCH_INTERVAL = 10.0
MAX_SEQ_DIGITS = 18        # a 64-bit number; int() of thousands of digits is slow or refused


class ClientError(ValueError):
    """A client request we refuse; the text goes back to the client."""


Target = str | tuple[str, str]   # a symbol (every interval) or (symbol, interval)


def label(target: Target) -> str:
    return target if isinstance(target, str) else f"{target[0]}@{target[1]}"


def parse_target(text) -> Target:
    """'BTCUSDT' (every interval), 'BTCUSDT@1m' or 'btcusdt@kline_1m'."""
    if not isinstance(text, str):
        raise ClientError("symbols must be strings")
    try:
        if "@kline_" in text:
            return parse_stream_name(text)
        sym, _, interval = text.partition("@")
        if interval:
            return parse_stream_name(f"{sym}@kline_{interval}")
        return normalize_symbol(sym)
    except ValueError as exc:
        raise ClientError(str(exc)) from None


def parse_batch(value: str | None) -> float:
    """?batch=50ms -> 0.05 seconds; absent -> 0 (one update per frame)."""
    if not value:
        return 0.0
    v = value.strip().lower()
    try:
        seconds = float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))
    except ValueError:
        seconds = -1
    if not 0 < seconds <= MAX_BATCH_INTERVAL:
        raise ClientError(f"invalid batch {value!r}: expected e.g. 50ms (at most {MAX_BATCH_INTERVAL:g}s)")
    return seconds


def parse_symbols(value: str | None, cap: int) -> frozenset | None:
    """?symbols=BTCUSDT,ETHUSDT@1m -> their targets; absent -> None (every stream)."""
    if not value:
        return None
    items = [t for t in value.split(",") if t]
    if len(items) > cap:
        raise ClientError(f"too many symbols: at most {cap} per client")
    return frozenset(parse_target(t) for t in items) or None


def parse_resume(epoch: str | None, last_seq: str | None, cap: int) -> tuple[str, dict] | None:
    """?epoch=E&last_seq=BTCUSDT@1m:1234,ETHUSDT@1m:99 -> (E, {(symbol, interval): seq})."""
    if not last_seq:
        return None
    items = last_seq.split(",")
    if len(items) > cap:
        raise ClientError(f"too many last_seq items: at most {cap}")
    last = {}
    for item in items:
        target, _, seq = item.rpartition(":")
        key = parse_target(target) if target else None
        # isdigit() alone accepts "²" and other digits int() refuses
        if not isinstance(key, tuple) or not (seq.isascii() and seq.isdigit() and len(seq) <= MAX_SEQ_DIGITS):
            raise ClientError(f"invalid last_seq item {item[:60]!r}: expected SYMBOL@INTERVAL:SEQ")
        last[key] = int(seq)
    return (epoch or "", last)


def parse_message(msg) -> tuple[str, list[Target]]:
    """A client message -> (action, targets); action is subscribe,
    unsubscribe or ping (with no targets)."""
    if isinstance(msg, bytes):
        raise ClientError("binary messages are not supported; send JSON text")
    text = msg.strip()
    if text.startswith(("subscribe:", "unsubscribe:")):  # the seed's text protocol
        action, _, target = text.partition(":")
        return action, [parse_target(target)]
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting within the size limit
        raise ClientError('expected JSON like {"action": "subscribe", "symbols": ["BTCUSDT"]}') from None
    if not isinstance(body, dict):
        raise ClientError("expected a JSON object")
    action = body.get("action")
    if action == "ping":
        return "ping", []
    if action in ("subscribe", "unsubscribe"):
        symbols = body.get("symbols")
        if not isinstance(symbols, list) or not symbols:
            raise ClientError("'symbols' must be a non-empty list")
        return action, [parse_target(t) for t in symbols]
    raise ClientError(f"unknown action {str(action)[:40]!r}: use subscribe, unsubscribe or ping")
