"""The dashboard at /: server rendering (Flask test client) and a real
headless Chromium against the app under gunicorn following the replay
exchange. Screenshots go to test-artifacts/."""
import re
import shutil
import tempfile
from contextlib import contextmanager
from html.parser import HTMLParser

import pytest

from app.candles import Candle
from tests.harness import ROOT, wait_until

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


# -- server rendering --------------------------------------------------------
class ScriptAudit(HTMLParser):
    """Collects what the CSP would refuse: inline scripts and on* handlers."""

    def __init__(self):
        super().__init__()
        self.inline_scripts = 0
        self.handlers = []
        self.script_srcs = []
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [name for name in attrs if name.startswith("on")]
        if tag == "script":
            if attrs.get("src"):
                self.script_srcs.append(attrs["src"])
            else:
                self._in_inline_script = True

    def handle_data(self, data):
        if self._in_inline_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline_script = False


def candle(symbol="BTCUSDT", close=7200.5, open_=7100.0) -> Candle:
    return Candle(symbol=symbol, interval="1m", open_time=1_577_836_800_000, close_time=1_577_836_859_999,
                  open=open_, high=max(open_, close) + 1, low=min(open_, close) - 1, close=close,
                  volume=1234.5, quote_volume=8_000_000.0, trades=99, closed=False, event_time=1_577_836_830_000)


def test_page_is_complete_without_javascript(app, client):
    app.extensions["services"].prices.update(candle())
    app.extensions["services"].prices.update(candle("ETHUSDT", close=128.1234, open_=130.0))
    resp = client.get("/?symbol=ETHUSDT&interval=1m")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    for text in ("7,200.50", "+100.50", "+1.42%", "1.23K",   # BTC: price, change, %, volume
                 "128.12", "-1.88", "-1.44%",                # ETH, coloured down
                 "Uptime", "Reconnects", "Messages in", "WebSocket clients", "Spool", "Write failures",
                 "sqlite", 'data-symbol="ETHUSDT"'):
        assert text in html, text
    assert re.search(r'class="pct down">-1.44%', html)
    assert 'href="?symbol=BTCUSDT&amp;interval=1m"' in html


def test_no_inline_script_and_security_headers(client):
    resp = client.get("/")
    audit = ScriptAudit()
    audit.feed(resp.get_data(as_text=True))
    assert audit.inline_scripts == 0 and audit.handlers == []
    assert "/static/js/dashboard.js" in audit.script_srcs
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Content-Security-Policy" not in client.get("/health").headers  # JSON needs no CSP


def test_nothing_secret_is_rendered(tmp_path):
    from app import create_app
    app = create_app(TESTING=True, API_KEY="s3cret-key", INFLUXDB_TOKEN="s3cret-token",
                     SQLITE_PATH=str(tmp_path / "c.sqlite3"), SPOOL_DIR=str(tmp_path / "spool"))
    html = app.test_client().get("/").get_data(as_text=True)
    assert "s3cret" not in html
    assert 'name="api_key" type="password"' in html  # asked for, never filled in


def test_missing_chart_library_is_explained(client, monkeypatch):
    from app.web import pages
    monkeypatch.setattr(pages, "CHART_LIBRARY", "vendor/not-installed.js")
    html = client.get("/").get_data(as_text=True)
    assert "not-installed.js" not in html
    assert "chart library is not installed" in html


def test_bad_stream_in_the_url_falls_back(client):
    html = client.get("/?symbol=<script>&interval=7x").get_data(as_text=True)
    assert "<script>&" not in html
    assert 'data-symbol="BTCUSDT" data-interval="1m"' in html


# -- the browser -------------------------------------------------------------
def chromium_options(javascript: bool = True):
    from selenium.webdriver.chrome.options import Options
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1366,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return options


@contextmanager
def chromium(javascript: bool = True):
    if not shutil.which(CHROMIUM) or not shutil.which(CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system-test-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = chromium_options(javascript)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser():
    with chromium() as driver:
        yield driver
        # Script errors and CSP refusals; HTTP errors ("network") are the tests' own business.
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
        assert errors == [], errors


def screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def price_text(driver, stream: str) -> str | None:
    return js(driver, "const td = document.querySelector(`tr[data-stream='${arguments[0]}'] .price`);"
                      "return td && td.textContent;", stream)


def chart_state(driver) -> tuple[int, float | None]:
    bars, last = js(driver, "const d = document.getElementById('chart').dataset; return [d.bars, d.lastTime];")
    return int(bars or 0), float(last) if last else None


def test_dashboard_streams_prices_and_draws_candles(live_app, browser):
    browser.get(live_app.url + "/?symbol=BTCUSDT&interval=1m")
    assert js(browser, "return typeof LightweightCharts") == "object", "the vendored chart library did not load"
    wait_until(lambda: js(browser, "return document.getElementById('live-status').textContent") == "live",
               10, message="the live WebSocket")

    # prices change live
    first = wait_until(lambda: (p := price_text(browser, "BTCUSDT@1m")) not in (None, "—") and p, 10,
                       message="a BTCUSDT price")
    wait_until(lambda: price_text(browser, "BTCUSDT@1m") != first, 10, message="the price to change")
    assert price_text(browser, "ETHUSDT@1m") not in (None, "—")

    # the chart draws the stored history, then a new candle arrives live
    bars, last = wait_until(lambda: (s := chart_state(browser))[0] > 1 and s, 15, message="candles on the chart")
    wait_until(lambda: chart_state(browser)[1] > last and chart_state(browser)[0] > bars, 15,
               message="a new candle")
    assert js(browser, "return document.querySelectorAll('#chart canvas').length") > 0
    assert "BTCUSDT" in browser.title

    # the system panel is refreshed from /stats
    wait_until(lambda: js(browser, "return document.getElementById('sys-feed').textContent") == "connected",
               10, message="the feed state")
    wait_until(lambda: js(browser, "return document.getElementById('sys-clients').textContent")[0] != "0", 10,
               message="this page among the WebSocket clients")
    wait_until(lambda: js(browser, "return document.querySelectorAll('#analysis dd').length") > 5, 20,
               message="the analysis summary")
    screenshot(browser, "dashboard-desktop")

    # a stream link switches the chart in place, without a page load
    js(browser, "window.__samePage = true;")
    browser.find_element("css selector", "tr[data-stream='ETHUSDT@1m'] a").click()
    wait_until(lambda: "ETHUSDT" in browser.find_element("id", "chart-title").text, 5, message="ETHUSDT chart")
    wait_until(lambda: chart_state(browser)[0] > 1, 15, message="ETHUSDT candles")
    assert js(browser, "return window.__samePage") is True
    assert "symbol=ETHUSDT" in browser.current_url


def test_subscribe_form_adds_a_stream_and_shows_errors(live_app, browser):
    from selenium.webdriver.support.ui import Select
    browser.get(live_app.url + "/")
    form = browser.find_element("id", "subscribe-form")
    wait_until(lambda: form.find_element("css selector", "button[value=subscribe]").is_enabled(), 5,
               message="the form to be enabled")
    result = browser.find_element("id", "subscribe-result")

    def submit(symbol, interval, action):
        symbol_input = form.find_element("name", "symbol")
        symbol_input.clear()
        symbol_input.send_keys(symbol)
        Select(form.find_element("name", "interval")).select_by_visible_text(interval)
        form.find_element("css selector", f"button[value={action}]").click()

    # the exchange does not list it: the API's 404 message is shown
    submit("NOPEUSDT", "1m", "subscribe")
    wait_until(lambda: "unknown symbol NOPEUSDT" in result.text, 10, message="the error message")
    assert "error" in result.get_attribute("class")

    submit("ethusdt", "3m", "subscribe")
    wait_until(lambda: "ETHUSDT@3m" in result.text, 10, message="the subscription")
    assert "ok" in result.get_attribute("class")
    wait_until(lambda: price_text(browser, "ETHUSDT@3m") not in (None, "—"), 15,
               message="the new stream's first price")
    screenshot(browser, "dashboard-subscribed")

    submit("ETHUSDT", "3m", "unsubscribe")
    wait_until(lambda: "ETHUSDT@3m: removed" in result.text, 10, message="the unsubscription")
    wait_until(lambda: price_text(browser, "ETHUSDT@3m") is None, 10, message="the row to go")


def test_phone_width(live_app, browser):
    browser.set_window_size(390, 844)
    browser.get(live_app.url + "/")
    wait_until(lambda: chart_state(browser)[0] > 1, 15, message="candles on the chart")
    wait_until(lambda: price_text(browser, "BTCUSDT@1m") not in (None, "—"), 10, message="prices")
    assert js(browser, "return document.documentElement.scrollWidth <= window.innerWidth"), "horizontal scroll"
    screenshot(browser, "dashboard-phone")


def test_works_without_the_chart_library(live_app):
    with chromium() as driver:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*lightweight-charts*"]})
        driver.get(live_app.url + "/")
        note = driver.find_element("id", "chart-note")
        wait_until(lambda: "chart library did not load" in note.text, 10, message="the missing-chart note")
        first = wait_until(lambda: (p := price_text(driver, "BTCUSDT@1m")) not in (None, "—") and p, 10,
                           message="a price")
        wait_until(lambda: price_text(driver, "BTCUSDT@1m") != first, 10, message="the price to change")
        screenshot(driver, "dashboard-no-chart")
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert all("lightweight-charts" in m for m in errors), errors


def test_static_view_without_javascript(live_app):
    wait_until(lambda: live_app.get("/prices")[1], 10, message="prices on the server")
    with chromium(javascript=False) as driver:
        driver.get(live_app.url + "/")
        rows = driver.find_elements("css selector", "#prices tr[data-stream]")
        assert {r.get_attribute("data-stream") for r in rows} >= {"BTCUSDT@1m", "ETHUSDT@1m"}
        price = driver.find_element("css selector", "tr[data-stream='BTCUSDT@1m'] .price").text
        assert re.fullmatch(r"[\d,]+\.\d{2}", price), price
        assert "connected" in driver.find_element("id", "sys-feed").text
        assert "needs JavaScript" in driver.find_element("id", "chart-note").get_attribute("innerHTML")
        screenshot(driver, "dashboard-nojs")
