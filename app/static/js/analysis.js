// The analysis summary of the selected stream, from /analysis/<symbol>.
import { compact, direction, pct, price } from "./format.js";

const REFRESH_MS = 15000;
const num = (digits) => (v) => (v == null ? "—" : v.toFixed(digits));
const rows = (a) => [
  ["Candles", String(a.count)],
  ["From", a.first_time?.replace("T", " ").slice(0, 16) + " UTC"],
  ["To", a.last_time?.replace("T", " ").slice(0, 16) + " UTC"],
  ["Return", pct(a.return_pct), direction(a.return_pct)],
  ["Low", price(a.min)],
  ["High", price(a.max)],
  ["Mean", price(a.mean)],
  ["VWAP", price(a.vwap, a.mean)],
  ["SMA 20", price(a.sma_20, a.mean)],
  ["EMA 20", price(a.ema_20, a.mean)],
  ["RSI 14", num(1)(a.rsi_14)],
  ["Volatility", a.volatility_pct == null ? "—" : `${num(3)(a.volatility_pct)}% per candle`],
  ["Annualised", a.volatility_annualised_pct == null ? "—" : `${num(1)(a.volatility_annualised_pct)}%`],
  ["Max drawdown", a.max_drawdown_pct == null ? "—" : `${num(2)(a.max_drawdown_pct)}%`],
  ["Volume", compact(a.volume)],
  ["Trades", compact(a.trades)],
];

export class AnalysisPanel {
  constructor({ list, note, windowSelect }) {
    this.list = list;
    this.note = note;
    this.windowSelect = windowSelect;
    this.stream = null;
    this.timer = 0;
    this.request = 0;   // answers to anything but the latest request are ignored
    windowSelect.addEventListener("change", () => this.refresh());
  }

  show(symbol, interval) {
    this.stream = { symbol, interval };
    this.list.replaceChildren();
    this.refresh();
  }

  async refresh() {
    clearTimeout(this.timer);
    const request = ++this.request;
    const { symbol, interval } = this.stream;
    const url = `/analysis/${encodeURIComponent(symbol)}?interval=${encodeURIComponent(interval)}` +
      `&window=${encodeURIComponent(this.windowSelect.value)}`;
    try {
      const resp = await fetch(url, { headers: { Accept: "application/json" } });
      const body = await resp.json().catch(() => null);
      if (request !== this.request) return;
      if (!resp.ok) throw new Error(body?.message || `HTTP ${resp.status}`);
      this.render(body);
    } catch (err) {
      if (request !== this.request) return;
      this.list.replaceChildren();
      this.note.textContent = `Analysis unavailable: ${err.message}`;
    }
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  render(a) {
    if (!a.count) {
      this.list.replaceChildren();
      this.note.textContent = `No stored ${a.interval} candles for ${a.symbol} in this window.`;
      return;
    }
    this.note.textContent = "";
    const items = rows(a).flatMap(([label, value, state]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (state) dd.className = state;
      return [dt, dd];
    });
    this.list.replaceChildren(...items);
  }
}
