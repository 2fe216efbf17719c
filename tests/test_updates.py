import struct

from app.updates import SEQ, STREAM_SEQ, UpdateLog, text_frame


def test_frames_are_valid_unmasked_text_frames():
    for n in (0, 125, 126, 65535, 65536):
        payload = b"x" * n
        frame = text_frame(payload)
        assert frame[0] == 0x81  # FIN + text
        assert frame[1] & 0x80 == 0  # server frames are not masked
        length = frame[1] & 0x7F
        if length == 126:
            length, start = struct.unpack("!H", frame[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack("!Q", frame[2:10])[0], 10
        else:
            start = 2
        assert length == n and frame[start:] == payload


def test_readers_get_everything_in_order_then_fall_off_the_ring():
    log = UpdateLog(capacity=4)
    cursor = log.next_seq
    log.append([(("BTCUSDT", "1m"), i, b'{"i":%d}' % i) for i in range(3)])
    entries, cursor2 = log.read(cursor)
    assert [e[STREAM_SEQ] for e in entries] == [0, 1, 2] and cursor2 == 3
    assert log.read(cursor2) == ([], 3)
    log.append([(("BTCUSDT", "1m"), i, b"{}") for i in range(3, 8)])
    assert log.read(cursor2) is None  # seq 3 was overwritten: too far behind
    entries, _ = log.read(4)
    assert [e[SEQ] for e in entries] == [4, 5, 6, 7]


def test_a_full_log_adds_nothing_for_the_garbage_collector_to_walk():
    """Every full collection walks every tracked object and stops every
    thread meanwhile: WS_BACKLOG entries must not be among them."""
    import gc
    log = UpdateLog(1000)
    log.append([(("BTCUSDT", "1m"), i, b'{"i":%d}' % i) for i in range(1000)])
    gc.collect()
    entries, _ = log.read(0, limit=1000)
    assert not any(gc.is_tracked(e) or gc.is_tracked(e[1]) for e in entries)


def test_snapshots_encode_each_stream_once_per_change_of_the_prices():
    """Thousands of clients may want a snapshot at once (after a restart, or
    all falling off the log): the streams are encoded once and shared."""
    import json

    from app.candles import Candle
    from app.clients.snapshots import Snapshots
    from app.prices import PriceBook

    prices = PriceBook()
    for i in range(100):
        prices.update(Candle(f"S{i:03d}USDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7, False, 1))
    snapshots = Snapshots(prices, "1")
    first = snapshots.pieces()
    frames = [snapshots.frame("connect", lambda key: key[0] < "S050") for _ in range(50)]
    assert snapshots.pieces() is first                     # nothing re-encoded for 50 snapshots
    body = json.loads(frames[0][4:])                        # 4-byte header: 126 + 16-bit length
    assert [d["symbol"] for d in body["data"]] == [f"S{i:03d}USDT" for i in range(50)]
    prices.update(Candle("S000USDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.6, 11.0, 16.0, 8, False, 2))
    again = snapshots.pieces()
    assert again is not first and json.loads(again[0][1])["close"] == 1.6   # a change is seen at once


def test_clients_that_fall_behind_in_one_turn_share_one_snapshot():
    """A resync snapshot of every stream is megabytes with thousands of
    streams; each lagged client holds it until sent, so they hold one."""
    from app.candles import Candle
    from app.clients.filters import Filters
    from app.clients.hub import Turn
    from app.clients.snapshots import Snapshots
    from app.prices import PriceBook

    prices = PriceBook()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        prices.update(Candle(symbol, "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7, False, 1))
    turn = Turn(0.0, 0, Snapshots(prices, "1"))
    everything = [turn.snapshot(Filters()) for _ in range(3)]
    assert everything[0] is everything[1] is everything[2] and b"ETHUSDT" in everything[0]
    some = turn.snapshot(Filters(frozenset({"BTCUSDT"})))
    assert b"BTCUSDT" in some and b"ETHUSDT" not in some
