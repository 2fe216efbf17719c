"""Binance's REST API: the symbol list (to refuse unknown symbols, which the
stream endpoint silently accepts) and, for gap backfill, historical klines."""
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger(__name__)

SYMBOLS_TTL = 3600.0


class ExchangeUnavailable(Exception):
    """Binance's REST API could not answer (network, 5xx, rate limit).
    `status` is the HTTP status if there was one; `retry_after` in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BinanceRest:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._symbols: set[str] = set()
        self._symbols_at = 0.0

    def get(self, path: str, **params) -> tuple[object, dict]:
        """GET a JSON document; returns (body, headers). Raises
        ExchangeUnavailable with the reason, including Binance's own message."""
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return json.load(resp), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace")
            hint = (" (Binance refuses this region: set BINANCE_REST_URL and BINANCE_WS_URL"
                    " for Binance.US)") if exc.code == 451 else ""
            try:
                retry_after = float(exc.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
            raise ExchangeUnavailable(f"{url} answered HTTP {exc.code}: {detail}{hint}",
                                      exc.code, retry_after) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ExchangeUnavailable(f"{url} failed: {exc}") from exc

    def symbols(self) -> set[str]:
        """Symbols Binance lists as trading, cached for an hour."""
        with self._lock:
            if self._symbols and time.monotonic() - self._symbols_at < SYMBOLS_TTL:
                return self._symbols
        body, _ = self.get("/api/v3/exchangeInfo")
        symbols = {s["symbol"] for s in body.get("symbols", []) if s.get("status") == "TRADING"}
        with self._lock:
            self._symbols, self._symbols_at = symbols, time.monotonic()
        log.info("exchange info: %d trading symbols", len(symbols))
        return symbols
