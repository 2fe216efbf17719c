// Wires the dashboard's panels to the live stream, the REST API and the URL.
import { AnalysisPanel } from "./analysis.js";
import { ChartPanel } from "./chart.js";
import { price } from "./format.js";
import { connectLive } from "./live.js";
import { PricesTable } from "./prices.js";
import { initSubscribeForm } from "./subscribe.js";
import { startSystemPanel } from "./system.js";

const $ = (id) => document.getElementById(id);
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800, M: 2592000 };
const intervalSeconds = (i) => parseInt(i, 10) * UNIT_SECONDS[i.slice(-1)];

let selected = document.body.dataset.symbol
  ? { symbol: document.body.dataset.symbol, interval: document.body.dataset.interval }
  : null;

const table = new PricesTable($("prices"), {
  onRender(stream, candle) {
    if (selected && stream === `${selected.symbol}@${selected.interval}`) {
      document.title = `${selected.symbol} ${price(candle.close)} · Crypto price stream`;
    }
  },
});
const chart = new ChartPanel({ container: $("chart"), note: $("chart-note"), title: $("chart-title") });
const analysis = new AnalysisPanel({ list: $("analysis"), note: $("analysis-note"), windowSelect: $("analysis-window") });

function select(symbol, interval, { push = true } = {}) {
  selected = { symbol, interval };
  const query = `?symbol=${encodeURIComponent(symbol)}&interval=${encodeURIComponent(interval)}`;
  if (push && location.search !== query) history.pushState(selected, "", query);
  table.select(`${symbol}@${interval}`);
  renderIntervals();
  chart.show(symbol, interval);
  analysis.show(symbol, interval);
}

// The interval switch: the usual intervals plus every one followed for this symbol.
function renderIntervals() {
  const nav = $("intervals");
  const live = new Set([...table.rows.keys()]
    .filter((s) => s.startsWith(selected.symbol + "@")).map((s) => s.split("@")[1]));
  const all = new Set([...nav.dataset.standard.split(","), ...live, selected.interval]);
  const links = [...all].sort((a, b) => intervalSeconds(a) - intervalSeconds(b)).map((i) => {
    const a = document.createElement("a");
    a.href = `?symbol=${encodeURIComponent(selected.symbol)}&interval=${i}`;
    a.dataset.interval = i;
    a.textContent = i;
    a.classList.toggle("live", live.has(i));
    if (i === selected.interval) {
      a.classList.add("selected");
      a.setAttribute("aria-current", "true");
    }
    return a;
  });
  nav.replaceChildren(...links);
}

// Stream and interval links switch the chart in place; the href still works
// for a new tab or without JavaScript.
document.addEventListener("click", (event) => {
  const link = event.target.closest("#prices a, #intervals a");
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const params = new URL(link.href).searchParams;
  event.preventDefault();
  select(params.get("symbol"), params.get("interval"));
});
window.addEventListener("popstate", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("symbol")) select(params.get("symbol"), params.get("interval") || selected.interval, { push: false });
});

const livePill = $("live-status");
livePill.hidden = false;

connectLive({
  onSnapshot(candles) {
    table.snapshot(candles);
    if (!selected && candles.length) select(candles[0].symbol, candles[0].interval, { push: false });
    for (const c of candles) chart.update(c);
  },
  onUpdate(candle) {
    table.update(candle);
    chart.update(candle);
  },
  onState(state, info = {}) {
    livePill.className = "pill " + state;
    livePill.textContent = state === "reconnecting"
      ? `reconnecting in ${Math.ceil(info.wait / 1000)} s` : state === "live" ? "live" : "connecting…";
    // Candles may have closed while we were away: the chart reloads them.
    if (info.reconnected && selected) chart.show(selected.symbol, selected.interval);
  },
});

startSystemPanel({
  onHealth(health) {
    const followed = new Set(health.subscribed_streams.map((s) => {
      const [symbol, kline] = s.split("@kline_");
      return `${symbol.toUpperCase()}@${kline}`;
    }));
    table.retain(followed);
  },
});

initSubscribeForm($("subscribe-form"), $("subscribe-result"), {
  onSubscribed: (stream) => table.expect(stream),
  onUnsubscribed: (stream) => table.remove(stream),
});

if (selected) select(selected.symbol, selected.interval, { push: false });
