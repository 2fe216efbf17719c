// The system panel and the health pill, refreshed from /stats and /health.
import { duration } from "./format.js";

const POLL_MS = 2000;

const ago = (seconds) => (seconds == null ? "never" : duration(seconds) + " ago");

// element id -> [text, state class or undefined] from (stats, health)
const FIELDS = {
  "sys-uptime": (s) => [duration(s.uptime_seconds)],
  "sys-feed": (s) => [s.feed.connected ? "connected" : "disconnected", s.feed.connected ? "up" : "down"],
  "sys-reconnects": (s) => [String(s.feed.reconnects)],
  "sys-last-message": (s) => [ago(s.feed.seconds_since_last_message)],
  "sys-in": (s) => [`${s.messages_in_per_second}/s`],
  "sys-out": (s) => [`${s.clients.messages_sent_per_second}/s`],
  "sys-clients": (s) => [`${s.clients.clients} / ${s.clients.max_clients}`],
  "sys-dropped": (s) => [String(s.clients.dropped_slow)],
  "sys-backend": (s) => [s.storage.backend],
  "sys-writer": (s) => {
    const ok = s.storage.running && s.storage.state === "ok";
    return [s.storage.running ? s.storage.state : "stopped", ok ? "up" : "down"];
  },
  "sys-queue": (s) => [String(s.storage.queue_depth)],
  "sys-spool": (s) => [`${s.storage.spool_points} candles`],
  "sys-last-write": (s) => [ago(s.storage.last_write_age_seconds)],
  "sys-failures": (s) => [String(s.storage.failures)],
};

export function startSystemPanel({ onHealth }) {
  const pill = document.getElementById("health-status");

  async function poll() {
    try {
      const [stats, health] = await Promise.all([getJSON("/stats"), getJSON("/health")]);
      for (const [id, field] of Object.entries(FIELDS)) {
        const el = document.getElementById(id);
        const [text, state] = field(stats);
        el.textContent = text;
        if (state) el.className = state;
      }
      pill.textContent = health.status;
      pill.className = "pill " + health.status;
      onHealth(health);
    } catch (err) {
      pill.textContent = "server unreachable";
      pill.className = "pill unhealthy";
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
}

async function getJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  // /health answers 503 with a body when unhealthy: that is still an answer.
  if (!resp.ok && resp.status !== 503) throw new Error(`HTTP ${resp.status}`);
  return resp.json();
}
