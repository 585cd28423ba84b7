// Server-Sent Events over fetch. EventSource cannot send an Authorization header, so the
// stream is read with fetch and parsed here. `SseParser` is pure: text in, events out.

import { auth, errorFrom, serverUrl } from "./api.js";
import { sleep } from "./util.js";

export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  /** Feed decoded text; returns the complete events `[{event, data, id}]` it finished. */
  feed(text) {
    this.buffer += text;
    const events = [];
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      if (this.buffer[newline] === "\r" && width === 1 && newline === this.buffer.length - 1) {
        break; // a lone CR at the end may be the first half of CRLF: wait for more
      }
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length > 0) {
          events.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        }
        this.reset();
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") this.id = value;
    }
    return events;
  }
}

/**
 * Follow `/api/events` until `signal` aborts, reconnecting with a growing pause.
 * `onEvent(name, data)` gets parsed JSON; `onStatus(connected)` reports the connection;
 * `onOpen()` runs on each (re)connection, before its snapshot arrives.
 */
export async function followEvents({ onEvent, onStatus, onOpen, signal }) {
  let failures = 0;
  while (!signal.aborted) {
    const sentToken = auth.token;
    try {
      const response = await fetch(serverUrl("api/events"), {
        headers: { Accept: "text/event-stream", ...auth.headers() },
        cache: "no-store",
        signal,
      });
      if (response.status === 401) {
        const error = errorFrom(401, await response.text());
        await auth.renew(sentToken, error, { background: true });
        continue;
      }
      if (!response.ok) throw errorFrom(response.status, await response.text());
      failures = 0;
      onOpen?.();
      onStatus(true);
      const parser = new SseParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.feed(value)) {
          try {
            onEvent(event.event, JSON.parse(event.data));
          } catch {
            // A malformed event is skipped; the next snapshot puts things right.
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error?.status === 401) {
        onStatus(false);
        await auth.nextToken(); // the person declined to give a token: wait until they do
        continue;
      }
    }
    onStatus(false);
    failures++;
    try {
      await sleep(Math.min(15_000, 500 * 2 ** failures), { signal });
    } catch {
      return;
    }
  }
}
