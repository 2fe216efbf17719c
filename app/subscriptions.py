"""The streams followed, kept in a small JSON file so that subscriptions and
unsubscriptions made at runtime survive a restart.

The file holds the followed set and the BINANCE_SYMBOLS streams in force
when it was written. At start the server follows the file's set, adjusted
by what changed in BINANCE_SYMBOLS/BINANCE_INTERVAL since: a stream added
there is followed, one taken out of it is dropped, and everything else
stays as the API left it (a configured stream unsubscribed through the API
stays unsubscribed). Without a file it follows BINANCE_SYMBOLS.

Written atomically (temporary file, fsync, rename) after every change, so a
crash leaves the old set or the new one, never half of one. A file that
cannot be read is moved aside, never deleted (like the spool), and the
server starts from BINANCE_SYMBOLS. A failed write is logged and the change
still applies to the running server; it is only not remembered.
"""
import json
import logging
import os
import tempfile
import threading
from datetime import datetime, timezone
from typing import Callable

from .candles import parse_stream_name, stream_name

log = logging.getLogger(__name__)

FILE_NAME = "subscriptions.json"


def path_for(config) -> str:
    """SUBSCRIPTIONS_PATH, or beside the embedded store when it is empty."""
    return config.get("SUBSCRIPTIONS_PATH") or os.path.join(
        os.path.dirname(os.path.abspath(config["SQLITE_PATH"])), FILE_NAME)


class SubscriptionFile:
    def __init__(self, path: str, configured: list[str]):
        self.path = path
        self.configured = sorted(set(configured))
        # Held across reading the followed set and writing it, so that of two
        # changes at once the later set is the one that lands on disk.
        self._lock = threading.Lock()

    def streams_at_start(self, limit: int) -> list[str]:
        """The streams to follow at start (at most `limit`), with one log line saying where they come from."""
        saved = self._load()
        if saved is None:
            log.info("following BINANCE_SYMBOLS (%d streams): no saved subscriptions in %s",
                     len(self.configured), self.path)
            return self.configured[:limit]
        followed, configured_then = saved
        added = set(self.configured) - configured_then
        removed = configured_then - set(self.configured)
        streams = sorted((followed - removed) | added)
        if len(streams) > limit:
            # Configured streams first: they are what the operator set last.
            kept = sorted(set(self.configured) & set(streams))[:limit]
            kept += [s for s in streams if s not in kept][:limit - len(kept)]
            log.error("%s lists %d streams, more than MAX_STREAMS=%d: following %d and dropping %s",
                      self.path, len(streams), limit, limit, sorted(set(streams) - set(kept)))
            streams = sorted(kept)
        log.info("following %d streams saved in %s (runtime subscriptions kept; BINANCE_SYMBOLS changes "
                 "since: %d added, %d removed)", len(streams), self.path, len(added), len(removed))
        return streams

    def _load(self) -> tuple[set[str], set[str]] | None:
        """(followed, configured then), or None without a usable file."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            followed, configured = _streams(data["streams"]), _streams(data["configured"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._move_aside(f"{type(exc).__name__}: {exc}")
            return None
        return followed, configured

    def _move_aside(self, problem: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = f"{self.path}.corrupt-{stamp}"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.error("saved subscriptions %s cannot be read (%s) nor moved aside (%s): following "
                      "BINANCE_SYMBOLS; the next change will try to replace it", self.path, problem, exc)
            return
        log.error("saved subscriptions %s cannot be read (%s): moved it aside to %s and following "
                  "BINANCE_SYMBOLS", self.path, problem, aside)

    def save(self, followed: Callable[[], list[str]]) -> bool:
        """Write the set `followed()` returns; False (logged) when it could
        not be written, and the change will then not survive a restart."""
        with self._lock:
            streams = followed()
            body = json.dumps({"streams": sorted(streams), "configured": self.configured}, indent=1) + "\n"
            directory = os.path.dirname(os.path.abspath(self.path))
            tmp = None
            try:
                os.makedirs(directory, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=FILE_NAME + ".", suffix=".tmp", dir=directory)
                with os.fdopen(fd, "w") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                tmp = None
                # The rename itself is durable only once the directory is.
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError as exc:
                log.error("cannot save the followed streams to %s (%s): the running server follows "
                          "%d streams, but this change will not survive a restart", self.path, exc, len(streams))
                return False
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
            return True


def _streams(value) -> set[str]:
    """Stream names as stream_name writes them; raises ValueError/TypeError otherwise."""
    if not isinstance(value, list):
        raise TypeError(f"expected a list of stream names, got {type(value).__name__}")
    out = set()
    for name in value:
        if not isinstance(name, str) or stream_name(*parse_stream_name(name)) != name:
            raise ValueError(f"not a stream name: {name!r}")
        out.add(name)
    return out
