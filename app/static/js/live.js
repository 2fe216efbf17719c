// The /ws/price connection: reconnects with jittered exponential backoff,
// and hands every message to the dashboard's handlers.
const INITIAL_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;

export function connectLive({ onSnapshot, onUpdate, onState }) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/price`;
  let delay = INITIAL_DELAY_MS;
  let everConnected = false;

  function open() {
    onState("connecting");
    const ws = new WebSocket(url);
    ws.onopen = () => {
      delay = INITIAL_DELAY_MS;
      onState("live", { reconnected: everConnected });
      everConnected = true;
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "price_update") onUpdate(msg.data);
      else if (msg.type === "snapshot") onSnapshot(msg.data, msg.reason);
      else if (msg.type === "error") console.warn("price stream:", msg.message);
    };
    ws.onclose = (event) => {
      // Full jitter: a restarted server is not hit by every tab at once.
      const wait = Math.round(delay / 2 + Math.random() * delay / 2);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
      onState("reconnecting", { wait, reason: event.reason });
      setTimeout(open, wait);
    };
  }

  open();
}
