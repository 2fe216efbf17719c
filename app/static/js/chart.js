// The candlestick chart of the selected stream: history from /history, then
// live updates, applied at most once per animation frame.
import { priceDecimals } from "./format.js";

const HISTORY_LIMIT = 500;
// Beyond this many unapplied candles (a tab hidden for long) a reload from
// /history is cheaper than replaying them all.
const MAX_PENDING = 1000;
const UP = "#26a69a";
const DOWN = "#ef5350";

export class ChartPanel {
  constructor({ container, note, title }) {
    this.container = container;
    this.note = note;
    this.title = title;
    this.key = null;
    this.pending = new Map();   // open_time -> newest candle for it
    this.frame = 0;
    this.lastTime = null;       // seconds, the newest bar shown
    this.bars = 0;
    this.loading = null;        // the AbortController of a history fetch in flight
    this.chart = window.LightweightCharts ? this.create(window.LightweightCharts) : null;
    // When the server found no library, its note already says how to install it.
    if (!this.chart && container.dataset.library === "installed") {
      note.textContent = "The chart library did not load; prices below still update live.";
    }
  }

  create(LC) {
    const chart = LC.createChart(this.container, {
      autoSize: true,
      layout: {
        background: { type: LC.ColorType.Solid, color: "#171b22" },
        textColor: "#8a93a2",
        // The library's logo injects a <style> the CSP refuses; the page credits TradingView instead.
        attributionLogo: false,
      },
      grid: { vertLines: { color: "#20252e" }, horzLines: { color: "#20252e" } },
      rightPriceScale: { borderColor: "#262c36" },
      timeScale: { borderColor: "#262c36", timeVisible: true, secondsVisible: false },
      crosshair: { mode: LC.CrosshairMode.Normal },
    });
    this.candles = chart.addSeries(LC.CandlestickSeries, {
      upColor: UP, downColor: DOWN, borderVisible: false, wickUpColor: UP, wickDownColor: DOWN,
    });
    this.volume = chart.addSeries(LC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false,
    });
    // Volume sits in the bottom fifth, under the candles.
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.1, bottom: 0.25 } });
    return chart;
  }

  async show(symbol, interval) {
    this.key = `${symbol}@${interval}`;
    this.title.replaceChildren(symbol + " ", Object.assign(document.createElement("span"),
      { className: "muted", textContent: interval }));
    if (!this.chart) return;
    this.loading?.abort();
    const loading = this.loading = new AbortController();
    this.pending.clear();
    this.lastTime = null;
    this.bars = 0;
    this.publish();
    this.candles.setData([]);
    this.volume.setData([]);
    this.note.textContent = "Loading history…";
    let candles = [];
    try {
      candles = await fetchHistory(symbol, interval, loading.signal);
      this.note.textContent = candles.length ? "" : `No stored ${interval} candles for ${symbol} yet: live ones will appear here.`;
    } catch (err) {
      if (err.name === "AbortError") return;
      this.note.textContent = `History unavailable (${err.message}): showing live candles only.`;
    }
    if (loading !== this.loading) return;   // another stream was selected meanwhile
    this.loading = null;
    this.candles.setData(candles.map(toBar));
    this.volume.setData(candles.map(toVolume));
    if (candles.length) this.setPrecision(candles[candles.length - 1].close);
    this.lastTime = candles.length ? toBar(candles[candles.length - 1]).time : null;
    this.bars = candles.length;
    this.publish();
    this.chart.timeScale().scrollToRealTime();
    this.flush();   // what arrived live while the history loaded
  }

  update(candle) {
    if (!this.chart || `${candle.symbol}@${candle.interval}` !== this.key) return;
    this.pending.set(candle.open_time, candle);
    if (this.pending.size > MAX_PENDING) {
      const [symbol, interval] = this.key.split("@");
      this.show(symbol, interval);
      return;
    }
    if (!this.frame && !this.loading) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const times = [...this.pending.keys()].sort((a, b) => a - b);
    for (const t of times) {
      const c = this.pending.get(t);
      const bar = toBar(c);
      // The library refuses bars older than its newest one; history already has them.
      if (this.lastTime !== null && bar.time < this.lastTime) continue;
      if (this.lastTime === null) this.setPrecision(c.close);
      this.candles.update(bar);
      this.volume.update(toVolume(c));
      if (bar.time !== this.lastTime) this.bars += 1;
      this.lastTime = bar.time;
    }
    this.pending.clear();
    this.publish();
  }

  setPrecision(close) {
    const precision = priceDecimals(close);
    this.candles.applyOptions({ priceFormat: { type: "price", precision, minMove: 10 ** -precision } });
  }

  // Exposed on the element for tests and for anyone inspecting the page.
  publish() {
    this.container.dataset.bars = this.bars;
    this.container.dataset.lastTime = this.lastTime ?? "";
  }
}

async function fetchHistory(symbol, interval, signal) {
  const url = `/history/${encodeURIComponent(symbol)}?interval=${encodeURIComponent(interval)}&limit=${HISTORY_LIMIT}`;
  const resp = await fetch(url, { signal, headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(body?.message || `HTTP ${resp.status}`);
  return Array.isArray(body) ? body : body.candles;
}

function toBar(c) {
  return { time: c.open_time / 1000, open: c.open, high: c.high, low: c.low, close: c.close };
}

function toVolume(c) {
  return { time: c.open_time / 1000, value: c.volume, color: c.close >= c.open ? UP + "80" : DOWN + "80" };
}
