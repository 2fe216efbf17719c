"""Durable candle storage: InfluxDB when INFLUXDB_HOST is set, otherwise an
embedded SQLite file, behind one Store interface, fed by one Writer thread
with a disk spool for outages. See writer.py for how a candle travels."""

from .base import Store
from .errors import StorageError
from .influx import InfluxStore
from .schema import MEASUREMENT, Point
from .spool import Spool
from .sqlite import SqliteStore
from .writer import Writer

__all__ = ["Storage", "Store", "StorageError", "MEASUREMENT", "Point", "open_storage", "open_store"]


def open_store(config) -> Store:
    if config["INFLUXDB_HOST"]:
        return InfluxStore(config["INFLUXDB_HOST"], config["INFLUXDB_DATABASE"],
                           config["INFLUXDB_TOKEN"], config["INFLUXDB_ORG"],
                           config["INFLUXDB_API"] or "v2", config["STORAGE_TIMEOUT"])
    return SqliteStore(config["SQLITE_PATH"])


class Storage:
    """`writer` takes candles from the dispatcher; `store` answers reads."""

    def __init__(self, config):
        self.store = open_store(config)
        # Reads and the writer thread use separate store objects: the writer
        # owns its HTTP/influxdb-client state and closes it when it stops.
        self.writer = Writer(
            open_store(config),
            Spool(config["SPOOL_DIR"], int(config["SPOOL_MAX_MB"] * 1024 * 1024)),
            batch_size=config["STORAGE_BATCH_SIZE"],
            flush_interval=config["STORAGE_FLUSH_INTERVAL"],
            memory_max=config["STORAGE_MEMORY_MAX_POINTS"],
            retry_initial=config["STORAGE_RETRY_INITIAL"],
            retry_max=config["STORAGE_RETRY_MAX"])


def open_storage(config) -> Storage:
    return Storage(config)
