"""The AsyncAPI 3 document of /ws/price, served at /asyncapi.json.

"send" and "receive" are the server's: it sends snapshots and updates and
receives the client's actions. The candle payload is the REST API's own
Candle model, and the limits come from the code that enforces them, so the
two descriptions cannot disagree on those."""
from ..candles import INTERVALS
from ..client_protocol import MAX_BATCH_INTERVAL, MAX_SEQ_DIGITS
from ..clients.session import GOING_AWAY, INTERNAL_ERROR, POLICY_VIOLATION, TRY_AGAIN_LATER
from .schemas import CANDLE_EXAMPLE, Candle

CLOSE_CODES = {
    GOING_AWAY: "the server is shutting down",
    1007: "a text frame that is not UTF-8",
    POLICY_VIOLATION: "bad query parameters; over WS_MAX_OUTPUT_BYTES of replies, pongs and snapshots queued "
                      "unread; still sending after 10 x WS_MAX_MESSAGES_PER_SECOND messages refused in a row",
    1009: "a message larger than WS_MAX_MESSAGE_BYTES",
    INTERNAL_ERROR: "a bug of ours (logged with its traceback)",
    TRY_AGAIN_LATER: "WS_MAX_CLIENTS clients, or WS_MAX_CLIENTS_PER_IP from the client's address, "
                     "already connected",
}
TARGET = {"type": "string", "examples": ["BTCUSDT", "ETHUSDT@1m", "btcusdt@kline_5m"],
          "description": "A symbol (every interval of it), SYMBOL@INTERVAL or a Binance stream name."}
UPDATE = {
    "type": "object",
    "required": ["type", "data"],
    "properties": {
        "type": {"const": "price_update"},
        "data": {"allOf": [Candle.model_json_schema(), {
            "type": "object", "required": ["seq", "source"],
            "properties": {"seq": {"type": "integer", "description": "The stream's update count, for resume."},
                           "source": {"enum": ["live", "backfill"],
                                      "description": "backfill: fetched after a gap in the feed."}}}]},
    },
}


def message(name: str, summary: str, payload: dict, example: dict | list) -> dict:
    return {"name": name, "summary": summary, "contentType": "application/json", "payload": payload,
            "examples": [{"payload": example}]}


def server_sent(kind: str, properties: dict, required: list[str]) -> dict:
    return {"type": "object", "required": ["type", *required],
            "properties": {"type": {"const": kind}, **properties}}


def client_action(actions: list[str], with_symbols: bool) -> dict:
    properties = {"action": {"enum": actions}}
    if with_symbols:
        properties["symbols"] = {"type": "array", "items": TARGET,
                                 "description": "At most WS_MAX_STREAMS_PER_CLIENT, subscribed and "
                                                "unsubscribed together."}
    return {"type": "object", "required": ["action", *(["symbols"] if with_symbols else [])],
            "properties": properties}


UPDATE_EXAMPLE = {"type": "price_update", "data": {**CANDLE_EXAMPLE, "seq": 42, "source": "live"}}
MESSAGES = {
    "snapshot": message("snapshot", "The latest candle of every stream the client follows: on connect, after "
                        "a subscribe, and when the client fell more than WS_BACKLOG updates behind.",
                        server_sent("snapshot", {
                            "reason": {"enum": ["connect", "subscribe", "lagged"]},
                            "epoch": {"type": "string", "description": "This server process's epoch, for resume."},
                            "data": {"type": "array", "items": UPDATE["properties"]["data"]}},
                            ["reason", "epoch", "data"]),
                        {"type": "snapshot", "reason": "connect", "epoch": "1763948000000",
                         "data": [UPDATE_EXAMPLE["data"]]}),
    "priceUpdate": message("price_update", "One update of a candle; with ?batch=, a JSON array of them per "
                           "frame.", {"oneOf": [UPDATE, {"type": "array", "items": UPDATE}]}, UPDATE_EXAMPLE),
    "gap": message("gap", "On resume: updates the server no longer holds (reload them from /history).",
                   server_sent("gap", {
                       "reason": {"enum": ["history exceeded", "server restarted"]},
                       "stream": {"type": "string"}, "streams": {"type": "array", "items": {"type": "string"}},
                       "from_seq": {"type": "integer"}, "to_seq": {"type": "integer"},
                       "message": {"type": "string"}}, ["reason", "message"]),
                   {"type": "gap", "reason": "history exceeded", "stream": "BTCUSDT@1m", "from_seq": 1235,
                    "to_seq": 1300, "message": "these updates are no longer held; reload from /history"}),
    "subscriptions": message("subscriptions", "The client's filters after a subscribe or unsubscribe.",
                             server_sent("subscriptions", {
                                 "action": {"enum": ["subscribe", "unsubscribe"]},
                                 "symbols": {"type": ["array", "null"], "items": {"type": "string"},
                                             "description": "null: every stream."},
                                 "excluded": {"type": "array", "items": {"type": "string"}}},
                                 ["action", "symbols", "excluded"]),
                             {"type": "subscriptions", "action": "subscribe", "symbols": ["BTCUSDT"],
                              "excluded": []}),
    "pong": message("pong", "The answer to a ping.", server_sent("pong", {"time": {"type": "integer"}}, []),
                    {"type": "pong", "time": 1763948000000}),
    "error": message("error", "A refused message: malformed JSON, a binary frame, an unknown action, a bad "
                     "symbol, too many streams, the rate limit (the first refusal of a run). Nothing changed.",
                     server_sent("error", {"message": {"type": "string"}}, ["message"]),
                     {"type": "error", "message": "invalid symbol 'BTC-USDT': expected 2-20 letters or digits, "
                                                 "e.g. BTCUSDT"}),
    "subscribe": message("subscribe", "Follow more streams (also the seed's text form subscribe:BTCUSDT).",
                         client_action(["subscribe"], True), {"action": "subscribe", "symbols": ["BTCUSDT"]}),
    "unsubscribe": message("unsubscribe", "Stop following streams (also unsubscribe:BTCUSDT).",
                           client_action(["unsubscribe"], True),
                           {"action": "unsubscribe", "symbols": ["ETHUSDT@1m"]}),
    "ping": message("ping", "Answered with a pong.", client_action(["ping"], False), {"action": "ping"}),
}
QUERY = {
    "type": "object",
    "properties": {
        "symbols": {"type": "string", "examples": ["BTCUSDT,ETHUSDT@5m"],
                    "description": "Comma-separated targets to follow (a bare symbol means all its intervals); "
                                   "every stream when absent. Intervals: " + " ".join(INTERVALS)},
        "batch": {"type": "string", "pattern": "^[0-9.]+(ms|s)?$", "examples": ["50ms"],
                  "description": f"Send one frame per this period holding a JSON array of price_update "
                                 f"messages (at most {MAX_BATCH_INTERVAL:g} s)."},
        "epoch": {"type": "string", "description": "Resume: the epoch of the snapshot received before. A "
                                                   "different one means the server restarted."},
        "last_seq": {"type": "string", "examples": ["BTCUSDT@1m:1234,ETHUSDT@1m:99"],
                     "pattern": f"^([A-Za-z0-9]+@[0-9A-Za-z_]+:[0-9]{{1,{MAX_SEQ_DIGITS}}},?)+$",
                     "description": "Resume: the last seq received per stream. The server sends what was missed "
                                    "from WS_BACKLOG updates, or a gap message per stream it cannot fill."},
    },
}


def document(host: str) -> dict:
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Crypto price stream: /ws/price", "version": "1",
                 "description": "Live candle updates. One JSON message per text frame (an array with ?batch=). "
                                "Bad query parameters close the connection with 1008 and the reason."},
        "servers": {"this": {"host": host, "protocol": "ws", "description": "This server (wss behind TLS)."}},
        "defaultContentType": "application/json",
        "channels": {"price": {
            "address": "/ws/price",
            "description": "Close codes: " + "; ".join(f"{code}: {why}" for code, why in CLOSE_CODES.items()),
            "messages": MESSAGES,
            "bindings": {"ws": {"method": "GET", "query": QUERY, "bindingVersion": "0.1.0"}},
            "x-close-codes": {str(code): why for code, why in CLOSE_CODES.items()},
        }},
        "operations": {
            "sendUpdates": {"action": "send", "channel": {"$ref": "#/channels/price"},
                            "summary": "Snapshots, updates and the answers to client messages.",
                            "messages": [{"$ref": f"#/channels/price/messages/{name}"} for name in
                                         ("snapshot", "priceUpdate", "gap", "subscriptions", "pong", "error")]},
            "receiveActions": {"action": "receive", "channel": {"$ref": "#/channels/price"},
                               "summary": "What a client may send; at most WS_MAX_MESSAGES_PER_SECOND.",
                               "messages": [{"$ref": f"#/channels/price/messages/{name}"} for name in
                                            ("subscribe", "unsubscribe", "ping")]},
        },
    }
