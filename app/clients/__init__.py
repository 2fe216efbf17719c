"""WebSocket clients of /ws/price, one module per job:

    hub.py        the clients, the per-host and total limits, and the one
                  fan-out thread ("ws-fanout") that writes to every client
    session.py    one connection: reads and answers the client's messages
    output.py     one connection's bytes on their way out, bounded, sent
                  without blocking
    filters.py    which streams one client follows, capped
    resume.py     what a reconnecting client missed, from the shared log
    snapshots.py  snapshot messages, each stream encoded once and shared
    ratelimit.py  the token bucket that paces each client's messages

Who writes: only the fan-out thread writes to client sockets. Each update
is already a finished frame in the shared log (app/updates.py); on every
tick the fan-out thread hands each client, in one non-blocking send, every
frame it is owed. No thread is woken per client or per message: on 2 cores
that hand-off, not the send, is what limits a thread-per-client fan-out
(measured: about 44k messages/s at 100 clients, with latency growing without
bound; see README, Benchmarks).

Each connection's own threads only read: the gunicorn worker thread that
runs `ClientSession.run` handles the client's messages, and
simple-websocket's reader thread parses frames. What they want to send
(replies, pongs, pings, close frames) goes into the connection's `Output`,
which the fan-out thread sends in order with the data.

The fan-out thread never waits for a connection's threads: it skips, for
one turn, a client whose lock is held. Whatever a client sends, the work it
causes is bounded (message size and rate, capped filters, output bytes), so
one client cannot slow the others.
"""
from .hub import ClientHub
from .session import ClientSession

__all__ = ["ClientHub", "ClientSession"]
