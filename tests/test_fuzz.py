"""Property-based fuzzing of what clients control, against the app under
gunicorn following a replay exchange of its own: REST requests (methods,
paths, query strings, headers, bodies) and WebSocket sessions (query
parameters, then text, binary, JSON and oversized messages).

Whatever is sent: never a 5xx, never a traceback in an answer, every message
answered (or the documented close code), and afterwards every background
thread still does its job and the worker's memory has stayed bounded.
Examples are derandomized so CI runs the same cases every time."""
import http.client
import json
import string
from datetime import datetime
from urllib.parse import quote, urlencode

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.candles import INTERVALS
from tests.harness import LiveApp, wait_until
from tests.replay_helpers import start_replay, stop_replay

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SYMBOLS = ("BTCUSDT", "ETHUSDT")   # the replay's recordings
MAX_MESSAGE_BYTES = 4096            # the app's WS_MAX_MESSAGE_BYTES default
# The fuzz grows the worker by a few MB while its bounded caches fill
# (update log, per-thread SQLite connections); a leak of a few kB per request
# or per connection would pass this.
RSS_GROWTH_LIMIT_KB = 16 * 1024


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    replay = start_replay(speed=60)
    # Rate limits have their own tests (test_client_hardening); here every
    # message of a long session must reach the parser.
    app = LiveApp(tmp_path_factory.mktemp("fuzz"), replay.url, BINANCE_SYMBOLS=",".join(SYMBOLS),
                  WS_BACKLOG=2000, WS_MAX_MESSAGES_PER_SECOND=10_000).start()
    try:
        yield app, replay
    finally:
        app.stop()
        stop_replay(replay)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def stats(app) -> dict:
    status, body = app.get("/stats")
    assert status == 200, body
    return body


def assert_every_thread_works(app, replay) -> None:
    """Each background thread shows it still runs by doing its job: the feed
    reconnects after a drop, the backfill asks Binance again, the dispatcher
    takes updates, the writer writes them, the fan-out sends them."""
    for symbol in SYMBOLS:  # the fuzz may have unsubscribed them
        assert app.post(f"/symbol/{symbol}/subscribe?interval=1m")[0] == 200
    before = stats(app)
    status, health = app.get("/health")
    assert status == 200 and health["dispatcher_running"] and health["storage"]["running"], health
    replay.drop()
    wait_until(lambda: stats(app)["feed"]["reconnects"] > before["feed"]["reconnects"], 10, message="a reconnect")
    wait_until(lambda: app.get("/health")[1]["feed_connected"], 10, message="the feed back")
    after = wait_until(lambda: (s := stats(app))["backfill"]["requests"] > before["backfill"]["requests"]
                       and s["storage"]["points_written"] > before["storage"]["points_written"]
                       and s["messages_in"] > before["messages_in"] and s, 15,
                       message="a backfill, updates taken and written")
    assert after["storage"]["dropped"] == 0
    ws = websocket.create_connection(app.ws_url, timeout=10)
    try:
        wait_until(lambda: json.loads(ws.recv())["type"] == "price_update", 10, 0, "an update sent to a client")
    finally:
        ws.close()


@pytest.fixture
def unharmed(fuzzed):
    """Runs the test, then checks nothing broke, leaked or logged a traceback meanwhile."""
    app, replay = fuzzed
    worker = app.worker_pid()
    rss_before = rss_kb(worker)
    log_from = len(app.log())
    yield app
    assert app.worker_pid() == worker, "the worker was replaced"
    grown = rss_kb(worker) - rss_before
    assert grown < RSS_GROWTH_LIMIT_KB, f"worker RSS grew by {grown} kB"
    assert_every_thread_works(app, replay)
    logged = app.log()[log_from:]
    assert "Traceback" not in logged and "Exception in thread" not in logged, logged[-3000:]


def assert_no_traceback(body: bytes) -> None:
    assert b"Traceback" not in body and b'File "' not in body, body[:500]


# -- REST ----------------------------------------------------------------------------
URL_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
HEADER_VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x100) if c != 0x7F)
# Headers whose wrong values would make the request itself unreadable (framing), not malformed input.
FRAMING = {"host", "content-length", "transfer-encoding", "connection", "expect"}

# Characters that pass a careless check: digits of other scripts and
# superscripts (str.isdigit() accepts them, int() refuses some), letters of
# other cases and scripts, marks, format and space characters, symbols.
ODD_DIGITS = "²³¹⁰₀①١٢٣۴५১௧๑໑༡၁០᠑𝟎𝟘"
odd_text = st.one_of(
    st.text(alphabet=ODD_DIGITS + "0123456789", min_size=1, max_size=8),
    st.text(alphabet=st.characters(categories=("Nd", "No", "Nl", "Lo", "Lt", "Mn", "Me", "Cf", "Zs", "So", "Sm"),
                                   codec="utf-8"), max_size=12),
)

segments = st.one_of(
    st.sampled_from(["BTCUSDT", "ethusdt", "SOLUSDT", "BTC-USDT", "b", "X" * 30, "..", "%", "%zz", "%00"]),
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.text(alphabet=URL_CHARS, max_size=30),
    odd_text.map(lambda t: quote(t, safe="")),
)


def mostly(usual, *unusual):
    """`usual` three times in four, else one of `unusual`: one odd value in
    an otherwise sensible request gets past the checks of the others."""
    return st.sampled_from([usual] * (3 * len(unusual)) + list(unusual)).flatmap(lambda strategy: strategy)


# Integers of every magnitude (hypothesis' own integers stay mostly small), and floats.
numbers = st.one_of(st.integers(), st.floats(), st.builds(lambda sign, digits: sign * 10 ** digits - 1,
                                                          st.sampled_from([-1, 1]), st.integers(0, 40))).map(str)
numbers = st.one_of(numbers, odd_text)
symbols = mostly(st.sampled_from(["BTCUSDT", "ethusdt"]), segments)
intervals = mostly(st.sampled_from(["1m", "5m", "1h", "1d"]),
                   st.sampled_from(list(INTERVALS) + ["7m", "1H", "m1", ""]), st.text(max_size=5))
times = mostly(st.integers(1577836800000, 1661040000000).map(str), numbers,
               st.one_of(st.datetimes().map(datetime.isoformat), st.text(max_size=30),
                         st.sampled_from(["2020-01-01T00:00:00Z", "2020-01-01T00:00:00+99:00", "0001-01-01",
                                          "9999-12-31T23:59:59.999999-12:00", "2020-13-45", "1577836800000.5"])))
limits = mostly(st.integers(1, 6000).map(str), numbers, st.text(max_size=10))
windows = mostly(st.sampled_from(["60", "1440", "90m", "24h", "7d"]), numbers, st.text(max_size=10),
                 st.tuples(st.integers(), st.sampled_from("smhdwy")).map(lambda nu: f"{nu[0]}{nu[1]}"))
# Each endpoint with the parameters it reads, any of them present, with values
# near and far from valid ones.
API = {
    "/history/{}": {"interval": intervals, "start": times, "end": times, "limit": limits},
    "/analysis/{}": {"interval": intervals, "window": windows},
    "/analysis": {"interval": intervals, "window": windows},
    "/symbol/{}/subscribe": {"interval": intervals},
    "/symbol/{}/unsubscribe": {"interval": intervals},
    "/symbol/{}/{}": {"interval": intervals},
    **{path: {} for path in ["/", "/prices", "/config", "/health", "/metrics", "/stats", "/symbols",
                             "/ws/price", "/static/{}", "/{}", "/{}/{}"]},
}
# The endpoints with parameters are where the cases are: drawn more often.
TEMPLATES = [t for t, params in API.items() for _ in range(1 + 3 * len(params))]
query_values = st.one_of(
    st.sampled_from(["1m", "5m", "1M", "7m", "1s", "0", "-1", "1e3", "10", "5001", "9" * 30, "24h", "7d", "0h",
                     "2020-01-01T00:00:00Z", "2020-13-45", "10000-01-01", "nan", "inf", "", "BTCUSDT"]),
    st.integers().map(str),
    st.text(max_size=40),
    odd_text,
)
junk_queries = st.one_of(
    st.lists(st.tuples(st.text(max_size=10), query_values), max_size=3).map(urlencode),
    st.text(alphabet=URL_CHARS + "=&?/", max_size=60),
)
headers = st.lists(st.tuples(
    st.one_of(st.sampled_from(["Content-Type", "Accept", "X-API-Key", "Origin", "Upgrade", "Cookie",
                               "Accept-Encoding", "If-None-Match", "Range", "Authorization"]),
              st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20)
              .filter(lambda name: name.lower() not in FRAMING)),
    st.text(alphabet=HEADER_VALUE_CHARS, max_size=100)), max_size=5)
bodies = st.one_of(st.just(b""), st.binary(max_size=2000),
                   st.text(max_size=200).map(lambda t: json.dumps({"symbol": t}).encode()))
other_methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "BREW"])


@st.composite
def rest_requests(draw):
    template = draw(st.sampled_from(TEMPLATES))
    path = template.format(*(draw(symbols) for _ in range(template.count("{}"))))
    params = draw(st.fixed_dictionaries({}, optional=API[template]))
    query = "&".join(q for q in (urlencode(params), draw(st.just("") | junk_queries)) if q)
    own = "POST" if template.startswith("/symbol/") else "GET"
    method = draw(mostly(st.just(own), other_methods))  # mostly past routing
    return method, path + ("?" + query if query else ""), draw(headers), draw(bodies)


def send(app, method: str, target: str, header_list, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=15)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in header_list:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_random_rest_requests_never_get_a_5xx_or_a_traceback(unharmed):
    @settings(FUZZ, max_examples=4000)
    @given(request=rest_requests())
    def one(request):
        status, body = send(unharmed, *request)
        assert status < 500, (request, status, body[:300])
        assert_no_traceback(body)

    one()


# -- WebSocket -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)
target_names = mostly(st.sampled_from(["BTCUSDT", "ethusdt@1m", "btcusdt@kline_5m", "ETHUSDT@1M", "BTCUSDT@1d"]),
                      st.sampled_from(["BTC-USDT", "@", "x@7m", "btcusdt@kline_", "BTCUSDT@1m:5", ""]),
                      st.text(max_size=15), odd_text,
                      odd_text.map(lambda t: f"BTCUSDT@{t}"), odd_text.map(lambda t: f"{t}@1m"))
actions = st.fixed_dictionaries(
    {"action": mostly(st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                      st.sampled_from(["dance", "", "PING"]), json_values)},
    optional={"symbols": mostly(st.lists(target_names, max_size=5),
                                st.lists(st.one_of(target_names, json_values), max_size=5), json_values)})
oversized = st.integers(MAX_MESSAGE_BYTES + 1, 4 * MAX_MESSAGE_BYTES).flatmap(
    lambda n: st.sampled_from(["x" * n, b"\0" * n]))
# As deep as fits in one message: a recursive parser's stack is not.
nested = st.tuples(st.integers(1, MAX_MESSAGE_BYTES // 2), st.sampled_from(["[]", "{}", "sym"])).map(
    lambda dk: "[" * dk[0] + "]" * dk[0] if dk[1] == "[]" else
    '{"a":' * (dk[0] // 5) + "1" + "}" * (dk[0] // 5) if dk[1] == "{}" else
    '{"action":"subscribe","symbols":' + "[" * (dk[0] // 2) + "]" * (dk[0] // 2) + "}")
messages = mostly(actions.map(json.dumps), nested,
                  json_values.map(json.dumps), st.text(max_size=100), st.binary(max_size=100), oversized,
                  st.tuples(st.sampled_from(["subscribe:", "unsubscribe:"]), target_names).map("".join))
resume_items = st.tuples(target_names, mostly(st.integers(0, 10 ** 6).map(str), numbers, st.text(max_size=5),
                                              odd_text))
ws_queries = st.fixed_dictionaries({}, optional={
    "symbols": st.lists(target_names, max_size=4).map(",".join),
    "batch": mostly(st.sampled_from(["50ms", "100ms", "1s", "10s"]), st.sampled_from(["0", "11s", "-1ms", "ms"]),
                    numbers, st.text(max_size=8)),
    "epoch": mostly(st.integers(0, 2 * 10 ** 12).map(str), st.text(max_size=15)),
    "last_seq": mostly(st.lists(resume_items, max_size=3).map(lambda items: ",".join(f"{t}:{n}" for t, n in items)),
                       st.text(max_size=30)),
}).map(urlencode)

CLOSE_BAD_QUERY, CLOSE_TOO_BIG = 1008, 1009


def from_server(ws):
    """Each JSON message the server sends, then its close code (an int).
    Raw frames: on a close frame websocket-client would answer on a socket
    the server has already closed."""
    while True:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            yield int.from_bytes(frame.data[:2], "big")
            return
        if frame.opcode == websocket.ABNF.OPCODE_TEXT:
            assert_no_traceback(frame.data)
            yield json.loads(frame.data)


def opened(received) -> int | None:
    """None once the connect snapshot arrived, or the close code."""
    for msg in received:
        if isinstance(msg, int):
            return msg
        if isinstance(msg, dict) and msg.get("type") == "snapshot":
            return None


def next_reply(received) -> dict | int:
    """The next message that answers the client (not a data update, snapshot
    or gap notice), or the close code."""
    for msg in received:
        if isinstance(msg, int) or isinstance(msg, dict) and msg.get("type") not in ("price_update", "snapshot", "gap"):
            return msg


def run_session(app, query: str, sent: list) -> None:
    """Every message is answered in order, or the session ends with the
    close code its message calls for."""
    ws = websocket.create_connection(app.ws_url + ("?" + query if query else ""), timeout=10)
    received = from_server(ws)
    try:
        closed = opened(received)
        if closed is not None:
            assert closed == CLOSE_BAD_QUERY, (query, closed)
            return
        for msg in sent:
            ws.send(msg, websocket.ABNF.OPCODE_BINARY if isinstance(msg, bytes) else websocket.ABNF.OPCODE_TEXT)
            reply = next_reply(received)
            size = len(msg if isinstance(msg, bytes) else msg.encode())
            if size > MAX_MESSAGE_BYTES:
                assert reply == CLOSE_TOO_BIG, (msg[:50], reply)
                return
            assert isinstance(reply, dict) and reply["type"] in ("pong", "error", "subscriptions"), (msg[:80], reply)
    finally:
        ws.close()


def test_random_websocket_sessions_are_answered_or_closed_with_their_code(unharmed):
    @settings(FUZZ, max_examples=1000)
    @given(query=ws_queries, sent=st.lists(messages, min_size=1, max_size=6))
    def one(query, sent):
        run_session(unharmed, query, sent)

    one()


def test_long_websocket_sessions_are_answered_to_the_end(unharmed):
    """State that grows with a session (filters, replies, output) is where a
    short session finds nothing."""
    long_messages = mostly(actions.map(json.dumps), nested, st.text(max_size=100))

    @settings(FUZZ, max_examples=25)
    @given(query=ws_queries, sent=st.lists(long_messages, min_size=100, max_size=400))
    def one(query, sent):
        run_session(unharmed, query, sent)

    one()


# -- Other sites' pages ------------------------------------------------------------------
schemes = st.sampled_from(["http", "https", "null", "file", "chrome-extension", "HTTP", ""])
odd_hosts = st.sampled_from(["evil.example", "127.0.0.1", "localhost", "127.0.0.1:1", "[::1]", "[", "[::1",
                             "[::1]:99999", "127.0.0.1:x", "127.0.0.1.evil.example", "xn--80ak6aa92e.com", "",
                             "user:pw@127.0.0.1", "127.0.0.1:{port}@evil.example", "evil.example#127.0.0.1:{port}"])
foreign_origins = mostly(
    st.tuples(schemes, odd_hosts).map(lambda sh: f"{sh[0]}://{sh[1]}"),
    st.tuples(schemes, st.text(alphabet=URL_CHARS + "[]", max_size=20)).map(lambda sh: f"{sh[0]}://{sh[1]}"),
    st.sampled_from(["null", "", "http://", "*"]),
    st.text(alphabet=HEADER_VALUE_CHARS, max_size=40),
)


@st.composite
def cross_site_posts(draw):
    """A state-changing request as a browser on another site sends it."""
    symbol = draw(st.sampled_from(SYMBOLS))
    action = draw(st.sampled_from(["subscribe", "unsubscribe"]))
    marks = draw(st.sampled_from(["fetch-site", "origin", "both"]))
    extra = draw(headers)
    site = draw(st.sampled_from(["cross-site", "same-site"]))
    origin = draw(foreign_origins)
    header_list = [h for h in extra if h[0].lower() not in ("origin", "sec-fetch-site")]
    if marks in ("fetch-site", "both"):
        header_list.append(("Sec-Fetch-Site", site))
    if marks in ("origin", "both"):
        header_list.append(("Origin", origin))
    return f"/symbol/{symbol}/{action}?interval=1m", header_list, marks


def test_pages_on_other_sites_change_nothing(unharmed):
    before = {s["stream"] for s in unharmed.get("/symbols")[1]}

    @settings(FUZZ, max_examples=400)
    @given(request=cross_site_posts())
    def one(request):
        target, header_list, marks = request
        header_list = [(k, v.replace("{port}", str(unharmed.port))) for k, v in header_list]
        origin = dict((k.lower(), v) for k, v in header_list).get("origin", "")
        status, body = send(unharmed, "POST", target, header_list, b"")
        assert status < 500, (request, status, body[:300])
        assert_no_traceback(body)
        if marks == "origin" and origin.lower() in (f"http://127.0.0.1:{unharmed.port}",
                                                    f"https://127.0.0.1:{unharmed.port}"):
            return  # the same host after all
        # 403, or 400 where other headers make the request unreadable
        assert status in (400, 403), (request, status, body[:300])
        assert {s["stream"] for s in unharmed.get("/symbols")[1]} == before

    one()
