// The subscribe/unsubscribe form, through the REST API, showing its answer.
export function initSubscribeForm(form, result, { onSubscribed, onUnsubscribed }) {
  const buttons = form.querySelectorAll("button");
  for (const b of buttons) b.disabled = false;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value || "subscribe";
    const symbol = form.elements.symbol.value.trim().toUpperCase();
    const interval = form.elements.interval.value;
    const headers = { Accept: "application/json" };
    if (form.elements.api_key) headers["X-API-Key"] = form.elements.api_key.value;
    const url = `/symbol/${encodeURIComponent(symbol)}/${action}?interval=${encodeURIComponent(interval)}`;

    for (const b of buttons) b.disabled = true;
    show(result, "", `${action === "subscribe" ? "Subscribing to" : "Unsubscribing from"} ${symbol} ${interval}…`);
    try {
      const resp = await fetch(url, { method: "POST", headers });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        show(result, "error", `${body.error || "HTTP " + resp.status}: ${body.message || resp.statusText}`);
      } else {
        const stream = `${body.symbol}@${body.interval}`;
        show(result, "ok", `${stream}: ${body.status}`);
        (action === "subscribe" ? onSubscribed : onUnsubscribed)(stream);
      }
    } catch (err) {
      show(result, "error", `Request failed: ${err.message}`);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  });
}

function show(el, state, text) {
  el.className = "note " + state;
  el.textContent = text;
}
