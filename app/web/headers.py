"""Security headers, both ways: what the answers carry, and which browser
requests may change the server's state.

The dashboard keeps every script and style in static files, so the policy
can forbid inline code outright: an injected <script> or onclick= would not
run.

Any web page can make its visitor's browser POST to this server (a form, or
fetch with mode "no-cors", needs no permission), and the server listens on
every interface with no key by default. So every request that is not a GET,
HEAD or OPTIONS is refused (403) when the browser says it comes from another
site or origin, API key or not, unless that origin is listed in
ALLOWED_ORIGINS. Browsers say so in Sec-Fetch-Site (all current ones); older
ones only in Origin, which must then name the host the request was sent to.
A request with neither header is not from a browser page (curl, scripts) and
is let through to the API key check as before.
"""
from urllib.parse import urlsplit

from flask import current_app, request

from . import error_reply

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    # 'self' covers ws:// and wss:// to this host (CSP level 3).
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# "none" is the user's own doing: typed in the address bar, a bookmark.
TRUSTED_FETCH_SITES = ("same-origin", "none")


def cross_site_source() -> str | None:
    """What makes this request a browser's cross-site one, or None."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() in current_app.config["ALLOWED_ORIGINS"]:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return None if site in TRUSTED_FETCH_SITES else f"Sec-Fetch-Site: {site}, Origin: {origin}"
    # Host and port only: behind a TLS proxy the page is https:// while we
    # are asked over http://, and a browser omits default ports in both headers.
    if origin is not None and _host_of(origin) != request.host.lower():
        return f"Origin: {origin}"
    return None


def _host_of(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:  # e.g. "http://[": not an origin any browser sends, so not ours
        return None


def init_app(app):
    @app.before_request
    def refuse_cross_site_changes():
        if request.method in SAFE_METHODS:
            return None
        source = cross_site_source()
        if source is None:
            return None
        app.extensions["services"].count_refusal("cross_site")
        return error_reply(403, "Forbidden", f"cross-site request refused ({source}): pages on other sites "
                                             f"may not change this server's state; list trusted origins "
                                             f"in ALLOWED_ORIGINS")

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() in app.config["ALLOWED_ORIGINS"]:
            # A listed origin's page may also read the answers and send the key.
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "X-API-Key"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        if app.config["ALLOWED_ORIGINS"]:
            response.vary.add("Origin")
        return response
