// The prices table. Updates can arrive hundreds of times a second, so they
// only record the newest candle per stream; the DOM is written once per
// animation frame.
import { compact, direction, pct, price, signed, streamKey } from "./format.js";

const AGE_REFRESH_MS = 1000;

export class PricesTable {
  constructor(tbody, { onRender } = {}) {
    this.tbody = tbody;
    this.onRender = onRender;
    this.rows = new Map();      // stream -> {tr, cells, close, receivedAt, flip}
    this.pending = new Map();   // stream -> newest candle not yet shown
    this.frame = 0;
    this.selected = null;
    for (const tr of tbody.querySelectorAll("tr[data-stream]")) this.adopt(tr);
    setInterval(() => this.renderAges(), AGE_REFRESH_MS);
  }

  adopt(tr) {
    const cells = {};
    for (const name of ["price", "change", "pct", "volume", "age"]) cells[name] = tr.querySelector("." + name);
    const row = { tr, cells, close: null, receivedAt: null, flip: false };
    this.rows.set(tr.dataset.stream, row);
    return row;
  }

  update(candle) {
    this.pending.set(streamKey(candle), candle);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  // A full snapshot replaces the table: streams missing from it are gone.
  snapshot(candles) {
    const present = new Set(candles.map(streamKey));
    for (const stream of this.rows.keys()) {
      if (!present.has(stream) && !this.rows.get(stream).tr.classList.contains("pending")) this.remove(stream);
    }
    for (const c of candles) this.update(c);
  }

  render() {
    this.frame = 0;
    const now = performance.now();
    for (const [stream, c] of this.pending) {
      const row = this.rows.get(stream) || this.insert(stream);
      row.tr.classList.remove("pending");
      this.fill(row, c);
      row.receivedAt = now;
      row.cells.age.textContent = "now";
      if (this.onRender) this.onRender(stream, c);
    }
    this.pending.clear();
  }

  fill(row, c) {
    const { cells } = row;
    if (row.close !== null && c.close !== row.close) {
      row.flip = !row.flip;
      cells.price.className = `price flash-${c.close > row.close ? "up" : "down"}-${row.flip ? "a" : "b"}`;
    }
    row.close = c.close;
    cells.price.textContent = price(c.close);
    cells.change.textContent = signed(c.price_change, c.close);
    cells.change.className = "change wide " + direction(c.price_change);
    cells.pct.textContent = pct(c.price_change_percent);
    cells.pct.className = "pct " + direction(c.price_change);
    cells.volume.textContent = compact(c.volume);
  }

  // A row for a stream first seen now, or `pending` right after subscribing.
  insert(stream, pending = false) {
    const [symbol, interval] = stream.split("@");
    const tr = document.createElement("tr");
    tr.dataset.stream = stream;
    const th = document.createElement("th");
    th.scope = "row";
    const link = document.createElement("a");
    link.href = `?symbol=${encodeURIComponent(symbol)}&interval=${encodeURIComponent(interval)}`;
    const muted = document.createElement("span");
    muted.className = "muted";
    muted.textContent = interval;
    link.append(symbol + " ", muted);
    th.append(link);
    tr.append(th);
    for (const name of ["price", "change wide", "pct", "volume wide", "age muted"]) {
      const td = document.createElement("td");
      td.className = name;
      td.textContent = "—";
      tr.append(td);
    }
    if (pending) tr.classList.add("pending");
    tr.classList.toggle("selected", stream === this.selected);
    this.tbody.querySelector("tr.empty")?.remove();
    const after = [...this.rows.keys()].filter((s) => s < stream).sort().pop();
    if (after) this.rows.get(after).tr.after(tr);
    else this.tbody.prepend(tr);
    return this.adopt(tr);
  }

  expect(stream) {
    if (!this.rows.has(stream)) this.insert(stream, true);
  }

  remove(stream) {
    this.rows.get(stream)?.tr.remove();
    this.rows.delete(stream);
    this.pending.delete(stream);
  }

  // Streams the server no longer follows (unsubscribed elsewhere) go away.
  retain(followed) {
    for (const stream of [...this.rows.keys()]) if (!followed.has(stream)) this.remove(stream);
  }

  select(stream) {
    this.selected = stream;
    for (const [s, row] of this.rows) row.tr.classList.toggle("selected", s === stream);
  }

  // Ages are measured from when this page received the update: replayed or
  // delayed data carries exchange times that say nothing about freshness.
  renderAges() {
    const now = performance.now();
    for (const row of this.rows.values()) {
      if (row.receivedAt !== null) row.cells.age.textContent = ageText((now - row.receivedAt) / 1000);
    }
  }
}

function ageText(seconds) {
  return seconds < 1 ? "now" : seconds < 60 ? `${Math.floor(seconds)} s ago` : `${Math.floor(seconds / 60)} min ago`;
}
