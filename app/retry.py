"""Retry-After, as every upstream says it: Binance's REST and stream
handshakes, and the database. One reading of it, used by all of them."""
import math
import time
from email.utils import parsedate_to_datetime

# Binance bans for up to three days; nothing we talk to has a reason to ask
# for longer, and a hostile or broken peer must not stop us for good.
MAX_RETRY_AFTER = 3 * 86_400.0


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date; None when the
    value says nothing usable (absent, garbage, not a finite number)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))
