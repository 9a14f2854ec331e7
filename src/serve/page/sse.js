// A Server-Sent Events reader over fetch(), so it can send the Authorization header
// (EventSource cannot). It parses the stream itself, remembers the last event id and
// reconnects with back-off, sending `Last-Event-ID` so the server replays what was missed.

import { authHeaders, waitForToken } from "./api.js";

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15000;
/** The server sends a keep-alive comment every ~15 s: silence this long means a dead link. */
const SILENCE_MS = 45000;

/**
 * An incremental SSE parser (the WHATWG event-stream format): feed it text chunks, it
 * calls `onEvent({id, event, data})` at each blank line that ends an event with data.
 * Handles CR, LF and CRLF line ends split across chunks, comments, multi-line data.
 */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastId = null;
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
  }

  feed(chunk) {
    this.buffer += chunk;
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/g;
      match.lastIndex = start;
      const found = match.exec(this.buffer);
      // A lone CR at the very end may be the first half of CRLF: wait for more.
      if (!found || (found[0] === "\r" && found.index === this.buffer.length - 1)) break;
      this.line(this.buffer.slice(start, found.index));
      start = found.index + found[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        this.onEvent({ id: this.lastId, event: this.event || "message", data: this.data.join("\n") });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
  }
}

/**
 * Keeps an event stream open on `url` until `close()`. Callbacks:
 * `onEvent(message)` with each event's parsed JSON `data`, `onOpen()` after each
 * (re)connection, `onState("connected" | "reconnecting")`.
 */
export class EventStream {
  constructor(url, { onEvent, onOpen = () => {}, onState = () => {} }) {
    Object.assign(this, { url, onEvent, onOpen, onState });
    this.lastId = null;
    this.closed = false;
    this.controller = null;
    this.backoff = MIN_BACKOFF_MS;
    this.loop();
  }

  close() {
    this.closed = true;
    this.controller?.abort();
  }

  async loop() {
    while (!this.closed) {
      let outcome = "retry";
      try {
        outcome = await this.connectOnce();
      } catch {
        // Network error, abort or a broken stream: reconnect below.
      }
      if (this.closed) return;
      this.onState("reconnecting");
      if (outcome === "gone") {
        this.closed = true; // A 4xx such as 404: retrying would get the same answer.
        return;
      }
      if (outcome === "unauthorized") {
        await waitForToken();
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, this.backoff));
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /**
   * One connection. Resolves "unauthorized" on a 401, "gone" on another client error
   * (except 408 and 429), "retry" when the stream or a server error ends it.
   */
  async connectOnce() {
    this.controller = new AbortController();
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    const response = await fetch(this.url, { headers, signal: this.controller.signal, cache: "no-store" });
    const { status } = response;
    if (status === 401) return "unauthorized";
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) return "gone";
    if (!response.ok || !response.body) return "retry";

    this.backoff = MIN_BACKOFF_MS;
    this.onState("connected");
    this.onOpen();
    const parser = new SseParser((message) => this.dispatch(message));
    parser.lastId = this.lastId;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let silence = this.watchdog();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "retry";
        clearTimeout(silence);
        silence = this.watchdog();
        parser.feed(value);
      }
    } finally {
      clearTimeout(silence);
    }
  }

  watchdog() {
    return setTimeout(() => this.controller.abort(), SILENCE_MS);
  }

  dispatch(message) {
    if (message.id !== null) this.lastId = message.id;
    let payload;
    try {
      payload = JSON.parse(message.data);
    } catch {
      return; // Not one of the API's events: ignored.
    }
    if (payload && typeof payload === "object") this.onEvent(payload);
  }
}
