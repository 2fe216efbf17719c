"""The shape every background thread of ours has: a name, a start, a stop,
and a wake-up. A subclass's `_run` waits on `_wake` and returns once
`_stopping` is set."""
import threading


class Worker:
    def __init__(self, name: str):
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # daemon: a thread stuck in a system call must not hold the process at exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
