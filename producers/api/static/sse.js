// Server-Sent Events read with fetch: unlike EventSource, fetch sends the Authorization
// header, so the token never goes into a URL. Reconnects by itself with Last-Event-ID.

/** Split SSE text into events; returns [events, the unfinished rest]. */
export function parseFrames(text) {
  const events = [];
  const blocks = text.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, type: "message", data: "" };
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") event.id = value;
      else if (field === "event") event.type = value;
      else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    }
    if (event.data) events.push(event);
  }
  return [events, rest];
}

/**
 * Read `url` as an SSE stream until `stop()`; `onEvent(type, data, id)` per event,
 * `onState(open, why)` when the connection opens or fails (it then retries).
 * `onUnauthorized()` stops retrying on a 401/403. `since`: the first request's
 * Last-Event-ID (the state's position), so it starts with what was sent after it.
 */
export function openStream(url, token, { onEvent, onState, onUnauthorized }, since = null) {
  let lastId = since;
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const answer = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
        if (answer.status === 401 || answer.status === 403) {
          onUnauthorized((await answer.json()).error);
          return;
        }
        if (!answer.ok) throw new Error(`stream answered ${answer.status}`);
        onState(true, null);
        const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffered = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const [events, rest] = parseFrames(buffered + value);
          buffered = rest;
          for (const event of events) {
            if (stopped) return;
            if (event.id) lastId = event.id;
            onEvent(event.type, JSON.parse(event.data), event.id);
          }
        }
        onState(false, "the stream ended");
      } catch (error) {
        if (stopped) return;
        onState(false, String(error.message || error));
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  run();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
