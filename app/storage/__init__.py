"""Placeholder until the storage writer lands: accepts and discards."""


class _Writer:
    def submit(self, candle):
        pass

    def start(self):
        pass

    def stop(self, timeout: float = 10.0):
        pass

    def stats(self) -> dict:
        return {}


class Storage:
    def __init__(self, config):
        self.writer = _Writer()


def open_storage(config) -> Storage:
    return Storage(config)
