"""Binance's REST API: the symbol list (to refuse unknown symbols, which the
stream endpoint silently accepts) and, for gap backfill, historical klines.

`BinanceRest` is the one place that knows what Binance said about being
asked, for every caller (backfill, subscribe requests):
- after 429 (rate limit) or 418 (this IP banned) it sends nothing until the
  Retry-After has passed, and fails at once instead: Binance bans IPs that
  keep asking after a 429, for longer each time;
- it reads the request weight each answer reports (X-MBX-USED-WEIGHT-1M), so
  bulk callers can pace themselves (`pace`);
- a failed symbol list is remembered for SYMBOLS_RETRY seconds, so a storm
  of subscribe requests during an outage costs one upstream request per
  period instead of one each (exchangeInfo weighs 20).
"""
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .retry import retry_after_seconds

log = logging.getLogger(__name__)

SYMBOLS_TTL = 3600.0        # the list of trading symbols changes rarely
SYMBOLS_RETRY = 10.0        # a failed symbol list is not asked for again sooner
RATE_LIMIT_WAIT = 60.0      # a 429 without Retry-After: Binance's weight window is a minute
BAN_WAIT = 3600.0           # a 418 without Retry-After (Binance bans for 2 minutes up to 3 days)
WEIGHT_LIMIT = 6000         # Binance spot's request weight per minute
WEIGHT_PAUSE_AT = 0.8       # bulk requests pause at this share of it, leaving room for the rest


class ExchangeUnavailable(Exception):
    """Binance's REST API could not answer (network, 5xx, rate limit, ban).
    `status` is the HTTP status if there was one; `retry_after` in seconds."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BinanceRest:
    def __init__(self, base_url: str, timeout: float = 10.0,
                 symbols_ttl: float = SYMBOLS_TTL, symbols_retry: float = SYMBOLS_RETRY):
        self.base_url = base_url
        self.timeout = timeout
        self.symbols_ttl = symbols_ttl
        self.symbols_retry = symbols_retry
        self.requests = 0                       # requests actually sent
        self._lock = threading.Lock()           # guards the state below
        self._blocked_until = 0.0               # monotonic; nothing is sent before it
        self._blocked_status: int | None = None
        self._weight = (0, 0)                   # (UTC minute, weight used in it)
        self._symbols: set[str] = set()
        self._symbols_at = 0.0
        self._symbols_failed: ExchangeUnavailable | None = None
        self._symbols_retry_at = 0.0            # monotonic; a failed list is not asked for before
        self._symbols_fetch = threading.Lock()  # one exchangeInfo request at a time

    def get(self, path: str, **params) -> object:
        """GET a JSON document. Raises ExchangeUnavailable with the reason,
        including Binance's own message; during a rate limit or ban without
        sending anything, with the seconds left as `retry_after`."""
        self._check_blocked()
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with self._lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                body = json.load(resp)
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", "replace")
            hint = (" (Binance refuses this region: set BINANCE_REST_URL and BINANCE_WS_URL"
                    " for Binance.US)") if exc.code == 451 else ""
            retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
            if exc.code in (418, 429):
                retry_after = self._block(exc.code, retry_after)
            raise ExchangeUnavailable(f"{url} answered HTTP {exc.code}: {detail}{hint}",
                                      exc.code, retry_after) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ExchangeUnavailable(f"{url} failed: {exc}") from exc
        self._count_weight(used)
        return body

    def _check_blocked(self) -> None:
        with self._lock:
            left, status = self._blocked_until - time.monotonic(), self._blocked_status
        if left > 0:
            why = "banned this IP (HTTP 418)" if status == 418 else "rate-limited us (HTTP 429)"
            raise ExchangeUnavailable(f"Binance {why}; waiting out its Retry-After", status, left)

    def _block(self, status: int, retry_after: float | None) -> float:
        wait = retry_after if retry_after is not None else BAN_WAIT if status == 418 else RATE_LIMIT_WAIT
        with self._lock:
            until = time.monotonic() + wait
            if until > self._blocked_until:
                self._blocked_until, self._blocked_status = until, status
        log.warning("Binance answered HTTP %d: no REST requests for %.0fs", status, wait)
        return wait

    def _count_weight(self, used: str | None) -> None:
        try:
            weight = int(used or 0)
        except ValueError:
            return
        with self._lock:
            self._weight = (int(time.time() // 60), weight)

    def pace(self) -> float:
        """Seconds a bulk caller should wait before its next request: the rest
        of the current minute once WEIGHT_PAUSE_AT of the weight budget is
        used (the budget is per UTC minute)."""
        now = time.time()
        with self._lock:
            minute, used = self._weight
        if minute != int(now // 60) or used < WEIGHT_LIMIT * WEIGHT_PAUSE_AT:
            return 0.0
        return 60 - now % 60

    def symbols(self) -> set[str]:
        """Symbols Binance lists as trading, cached for `symbols_ttl`. If
        Binance cannot be asked, the previous list (however old) is used, or
        ExchangeUnavailable is raised; either way it is asked again only after
        its Retry-After, or `symbols_retry` seconds if it gave none."""
        with self._lock:
            if self._symbols and time.monotonic() - self._symbols_at < self.symbols_ttl:
                return self._symbols
        # One request at a time: the callers that arrive meanwhile take its answer.
        with self._symbols_fetch:
            with self._lock:
                now = time.monotonic()
                if self._symbols and now - self._symbols_at < self.symbols_ttl:
                    return self._symbols
                failed = self._symbols_failed if now < self._symbols_retry_at else None
            if failed is None:
                try:
                    return self._fetch_symbols()
                except ExchangeUnavailable as exc:
                    failed = exc
                    wait = self.symbols_retry if exc.retry_after is None else max(1.0, exc.retry_after)
                    with self._lock:
                        self._symbols_failed, self._symbols_retry_at = exc, time.monotonic() + wait
                    if self._symbols:
                        log.warning("exchange info: keeping the list of %d symbols from %.0fs ago: %s",
                                    len(self._symbols), time.monotonic() - self._symbols_at, exc)
            with self._lock:
                if self._symbols:
                    return self._symbols
                again = self._symbols_retry_at - time.monotonic()
        raise ExchangeUnavailable(f"{failed} (asking Binance again in {max(1, round(again))}s)",
                                  failed.status, max(0.0, again))

    def _fetch_symbols(self) -> set[str]:
        body = self.get("/api/v3/exchangeInfo")
        try:
            symbols = {s["symbol"] for s in body["symbols"] if s.get("status") == "TRADING"}
        except (TypeError, KeyError, AttributeError) as exc:
            raise ExchangeUnavailable(f"exchangeInfo answer without a symbol list: {exc!r}") from exc
        with self._lock:
            self._symbols, self._symbols_at = symbols, time.monotonic()
            self._symbols_failed = None
        log.info("exchange info: %d trading symbols", len(symbols))
        return symbols
