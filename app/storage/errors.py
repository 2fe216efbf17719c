"""Storage failures, classified once so the writer and `check-db` can tell a
database that is briefly away from a configuration that can never work."""
from ..retry import retry_after_seconds

# kind -> (permanent?, what an operator should look at)
KINDS = {
    "unreachable": (False, "cannot reach the database: is it running, and is INFLUXDB_HOST right?"),
    "timeout": (False, "the database did not answer in time"),
    "throttled": (False, "the database asked us to slow down"),
    "server": (False, "the database reported an internal error"),
    "unavailable": (False, "the local database file is busy, missing or full"),
    "auth": (True, "the database refused the credentials: check INFLUXDB_TOKEN"),
    "not_found": (True, "unknown database or bucket: create it or fix INFLUXDB_DATABASE"),
    "bad_data": (True, "the database refused the data"),
    # Transient for all we know: a proxy or load balancer in front of the
    # database answering 400 is as likely as a wrong INFLUXDB_HOST.
    "refused": (False, "the database refuses every write, even the well-formed check point: "
                       "is INFLUXDB_HOST the database itself, and INFLUXDB_API right?"),
    "unsupported": (True, "the database does not support this operation"),
}


class StorageError(Exception):
    def __init__(self, kind: str, detail: str, status: int | None = None,
                 retry_after: float | None = None):
        self.kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{kind}: {detail}")

    @property
    def permanent(self) -> bool:
        return KINDS[self.kind][0]

    @property
    def diagnosis(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{KINDS[self.kind][1]}{status}: {self.detail}"


def error_from_http(status: int, body: bytes | str | None, headers=None) -> StorageError:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    text = text.strip()[:300] or f"HTTP {status}"
    retry_after = retry_after_seconds((headers or {}).get("Retry-After"))
    if status in (401, 403):
        kind = "auth"
    elif status == 404 and "page not found" in text:
        # The server has no such endpoint: a 1.x before 1.8 has no /api/v2.
        kind = "unsupported"
        text += " (no such endpoint; for InfluxDB 1.x before 1.8 set INFLUXDB_API=v1)"
    elif status == 404 or "database not found" in text or "bucket not found" in text:
        kind = "not_found"
    elif status == 429:
        kind = "throttled"
    elif status >= 500:
        kind = "server"
    else:  # 400 bad line protocol / field type conflict, 413 too large, 422 outside retention
        kind = "bad_data"
    return StorageError(kind, text, status, retry_after)
