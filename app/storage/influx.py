"""InfluxDB: writes through the v2 write API (influxdb-client; InfluxDB 2.x,
3.x, 1.8+) or the v1 `/write` endpoint (InfluxDB 1.x before 1.8); reads
through InfluxQL on `/query`, the one read API that 1.x, 2.4+ and 3.x all
answer. HTTP clients are made on first use, in the thread that needs them,
so nothing is shared across a gunicorn fork."""
import json
import threading
from datetime import datetime, timezone
from urllib.parse import urlencode

import urllib3

from .base import Store
from .errors import StorageError, error_from_http
from .schema import CHECK_MEASUREMENT, FIELDS, MEASUREMENT, Point, candle_from_fields, line_protocol


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class InfluxStore(Store):
    """api is "v1" or "v2"; database may be "db/rp" (1.x retention policy)."""

    def __init__(self, url: str, database: str, token: str = "", org: str = "",
                 api: str = "v2", timeout: float = 10.0, measurement: str = MEASUREMENT):
        if api not in ("v1", "v2"):
            raise ValueError(f"INFLUXDB_API must be v1 or v2, not {api!r}")
        self.url = url.rstrip("/")
        self.database = database
        self.db, _, self.rp = database.partition("/")
        self.token = token
        self.org = org
        self.api = api
        self.timeout = timeout
        self.measurement = measurement
        self.backend = f"influxdb-{api}"
        self._http: urllib3.PoolManager | None = None
        self._client = None
        self._v2_write = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"InfluxDB at {self.url}, database {self.database!r}, {self.api} write API"

    # -- HTTP ----------------------------------------------------------------
    def _headers(self) -> dict:
        """1.x before 1.8 knows only user and password (sent as Basic auth,
        which it accepts like u=/p= but keeps them out of URLs); everything
        newer takes `Authorization: Token`."""
        if not self.token:
            return {}
        if self.api == "v1" and ":" in self.token:
            return urllib3.make_headers(basic_auth=self.token)
        return {"Authorization": f"Token {self.token}"}

    def _request(self, method: str, path: str, params: dict, body: bytes | None = None):
        with self._lock:
            if self._http is None:
                self._http = urllib3.PoolManager(
                    num_pools=2, maxsize=8, retries=False,
                    timeout=urllib3.Timeout(connect=min(self.timeout, 5.0), read=self.timeout))
        url = f"{self.url}{path}?{urlencode(params)}"
        try:
            resp = self._http.request(method, url, body=body, headers=self._headers())
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._transport_error(exc) from exc
        if resp.status >= 300:
            raise error_from_http(resp.status, resp.data, resp.headers)
        return resp

    def _transport_error(self, exc: Exception) -> StorageError:
        # urllib3 makes NewConnectionError a kind of ConnectTimeoutError.
        timed_out = (isinstance(exc, urllib3.exceptions.TimeoutError)
                     and not isinstance(exc, urllib3.exceptions.NewConnectionError))
        return StorageError("timeout" if timed_out else "unreachable", f"{self.url}: {exc}")

    def ping(self) -> str:
        resp = self._request("GET", "/ping", {})
        version = resp.headers.get("X-Influxdb-Version")
        return f"{self.url} answered" + (f" (InfluxDB {version})" if version else "")

    # -- writes --------------------------------------------------------------
    def write(self, points: list[Point]) -> None:
        body = "\n".join(line_protocol(p, self.measurement) for p in points).encode()
        if self.api == "v1":
            params = {"db": self.db, "precision": "ms", **({"rp": self.rp} if self.rp else {})}
            self._request("POST", "/write", params, body)
        else:
            self._write_v2(body)

    def _write_v2(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        if self._v2_write is None:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
            # Synchronous: we batch, retry and spool ourselves, and nothing
            # sits in a buffer of the client's that close() could lose.
            self._client = InfluxDBClient(url=self.url, token=self.token, org=self.org or "-",
                                          timeout=int(self.timeout * 1000))
            self._v2_write = self._client.write_api(write_options=SYNCHRONOUS)
        try:
            self._v2_write.write(bucket=self.database, org=self.org or "-", record=body,
                                 write_precision="ms")
        except ApiException as exc:
            raise error_from_http(exc.status or 0, exc.body, exc.headers) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._transport_error(exc) from exc

    # -- InfluxQL reads --------------------------------------------------------
    def query(self, q: str, method: str = "GET") -> list[dict]:
        """The statement's series: [{"name", "tags", "columns", "values"}]."""
        params = {"db": self.db, "q": q, "epoch": "ms", **({"rp": self.rp} if self.rp else {})}
        resp = self._request(method, "/query", params)
        try:
            results = json.loads(resp.data)["results"]
        except (ValueError, KeyError) as exc:
            raise StorageError("server", f"unexpected /query answer: {resp.data[:200]!r}") from exc
        for result in results:
            if "error" in result:
                raise error_from_http(400, result["error"])
        return [s for result in results for s in result.get("series", [])]

    def select(self, q: str) -> list[tuple[dict, list]]:
        """A SELECT's rows as (tags, [time_ms, values...]) pairs."""
        series = self.query(q)
        if any(s.get("columns", [None])[0] != "time" for s in series):
            # VictoriaMetrics answers every /query with its database list.
            raise StorageError("unsupported", f"{self.url} does not answer InfluxQL SELECTs")
        return [(dict(zip(s["columns"][1:], row[1:])), row) for s in series for row in s["values"]]

    def _where(self, symbol: str, interval: str) -> str:
        return f'"symbol" = {_quote(symbol)} AND "interval" = {_quote(interval)}'

    def history(self, symbol, interval, start_ms=None, end_ms=None, limit=500):
        where = self._where(symbol, interval)
        if start_ms is not None:
            where += f" AND time >= '{_rfc3339(start_ms)}'"
        if end_ms is not None:
            where += f" AND time <= '{_rfc3339(end_ms)}'"
        order = "ASC" if start_ms is not None else "DESC"
        fields = ",".join(f'"{f}"' for f in FIELDS)
        rows = self.select(f'SELECT {fields} FROM "{self.measurement}" WHERE {where} '
                           f"ORDER BY time {order} LIMIT {int(limit)}")
        candles = [candle_from_fields(symbol, interval, row[0], values) for values, row in rows]
        return candles if start_ms is not None else candles[::-1]

    def last_closed(self, symbol, interval):
        rows = self.select(f'SELECT "close" FROM "{self.measurement}" WHERE '
                           f'{self._where(symbol, interval)} AND "closed" = true ORDER BY time DESC LIMIT 1')
        return rows[0][1][0] if rows else None

    def symbols(self, interval):
        series = self.query(f'SHOW TAG VALUES FROM "{self.measurement}" WITH KEY = "symbol" '
                            f'WHERE "interval" = {_quote(interval)}')
        return sorted({row[1] for s in series for row in s["values"]})

    # -- check-db ----------------------------------------------------------------
    def probe(self):
        return InfluxStore(self.url, self.database, self.token, self.org, self.api,
                           self.timeout, CHECK_MEASUREMENT)

    def drop(self):
        # 1.x only; 2.x and 3.x refuse InfluxQL deletes and check() says so.
        self.query(f'DROP SERIES FROM "{self.measurement}"', method="POST")
        return f'DROP SERIES FROM "{self.measurement}"'

    def close(self):
        if self._v2_write is not None:
            self._v2_write.close()
            self._client.close()
            self._v2_write = None
        if self._http is not None:
            self._http.clear()
            self._http = None
