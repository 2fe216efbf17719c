// Number formats, the same as the server's template filters (web/pages.py).
const formatters = new Map();

function fixed(decimals) {
  let f = formatters.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    formatters.set(decimals, f);
  }
  return f;
}

export function priceDecimals(value) {
  const a = Math.abs(value);
  return a >= 100 ? 2 : a >= 1 ? 4 : a >= 0.01 ? 6 : 8;
}

// `like` sets the precision from another number (a change, by its price).
export function price(value, like = value) {
  return value == null ? "—" : fixed(priceDecimals(like)).format(value);
}

export function signed(value, like) {
  return (value > 0 ? "+" : "") + price(value, like);
}

export function pct(value) {
  return value == null ? "—" : (value >= 0 ? "+" : "") + value.toFixed(2) + "%";
}

export function compact(value) {
  if (value == null) return "—";
  for (const [size, suffix] of [[1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
    if (Math.abs(value) >= size) return (value / size).toFixed(2) + suffix;
  }
  return String(Number(value.toFixed(2)));
}

export function duration(seconds) {
  if (seconds == null) return "—";
  let s = Math.floor(seconds);
  if (s < 60) return seconds < 10 ? seconds.toFixed(1) + " s" : s + " s";
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s}s`;
}

export function direction(value) {
  return !value ? "flat" : value > 0 ? "up" : "down";
}

export function streamKey(candle) {
  return `${candle.symbol}@${candle.interval}`;
}
