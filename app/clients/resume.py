"""Client resume: what a reconnecting client missed, from the shared log.

A client that reconnects with `?epoch=E&last_seq=STREAM:SEQ,...` gets the
updates after those numbers that the log still holds, and a `gap` message
for each stream whose next update is no longer held (or for every stream,
when the server restarted and the numbers mean nothing any more)."""
from dataclasses import dataclass, field

from ..client_protocol import label
from ..prices import PriceBook
from ..updates import UpdateLog


@dataclass
class Resume:
    cursor: int                                    # where in the log the client starts
    messages: list[dict] = field(default_factory=list)   # gaps, to send before anything else
    skip: dict = field(default_factory=dict)       # stream -> last seq the client has...
    skip_until: int = 0                            # ...for log entries before this one
    restarted: bool = False                        # the numbers are from another process


def plan(updates: UpdateLog, prices: PriceBook, epoch: str, last: dict, client_epoch: str) -> Resume:
    cursor = updates.next_seq
    if client_epoch != epoch:
        return Resume(cursor, [{
            "type": "gap", "reason": "server restarted", "streams": sorted(map(label, last)),
            "message": "sequence numbers restarted; reload from /history"}], restarted=True)
    start = max(0, cursor - updates.capacity + 1)
    read = updates.read(start, limit=updates.capacity)
    first_seen: dict = {}   # stream -> (log seq, stream seq) of its first update the client lacks
    for log_seq, key, stream_seq, _, _ in read[0] if read else []:
        if key in last and stream_seq > last[key]:
            first_seen.setdefault(key, (log_seq, stream_seq))
    current = {c.key: seq for c, seq in prices.snapshot()}
    gaps = []
    for key, seq in last.items():
        # The first update held after the client's last one; if none is
        # held, the stream's latest tells whether any were missed.
        held = first_seen[key][1] if key in first_seen else current.get(key, 0) + 1
        if held > seq + 1:
            gaps.append({"type": "gap", "reason": "history exceeded", "stream": label(key),
                         "from_seq": seq + 1, "to_seq": held - 1,
                         "message": "these updates are no longer held; reload from /history"})
    return Resume(min((log_seq for log_seq, _ in first_seen.values()), default=cursor), gaps, dict(last), cursor)
