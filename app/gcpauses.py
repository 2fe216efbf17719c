"""Garbage-collection pauses, measured from inside the process.

A collection stops every thread (feed, dispatcher, fan-out, writer), so its
length goes straight into every client's latency. CPython reports each
collection's start and stop through `gc.callbacks`; this counts them per
generation and keeps the longest and the total pause, for /stats and
/metrics."""
import gc
import time


class GcPauses:
    # No lock: the callback runs inside whatever allocation set off the
    # collection, possibly in a thread that holds any lock, stats() included.
    # The GIL is held for the whole collection, so updates are not torn.
    def __init__(self):
        self._started: tuple[float, float] | None = None
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]
        self.total_seconds = [0.0, 0.0, 0.0]
        # CPU time of the collecting thread: the collector's own work, which
        # a busy machine does not inflate (wall time includes waiting for a core).
        self.longest_cpu_ms = [0.0, 0.0, 0.0]

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
            return
        if self._started is None:
            return
        (wall, cpu), self._started = self._started, None
        pause, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        gen = info["generation"]
        self.collections[gen] += 1
        self.total_seconds[gen] += pause
        self.longest_ms[gen] = max(self.longest_ms[gen], pause * 1000)
        self.longest_cpu_ms[gen] = max(self.longest_cpu_ms[gen], cpu * 1000)

    def stats(self) -> dict:
        return {f"gen{g}": {"collections": self.collections[g],
                            "pause_seconds_total": round(self.total_seconds[g], 4),
                            "longest_pause_ms": round(self.longest_ms[g], 2),
                            "longest_pause_cpu_ms": round(self.longest_cpu_ms[g], 2)}
                for g in range(3)} | {"frozen_objects": gc.get_freeze_count()}
