// The WebSocket transport: one connection to /api/ws per upload, the file's bytes sent in
// order as binary frames, under the server's credit (docs/websocket.md).
//
// The uploader thinks in chunks, the protocol in byte offsets, so this transport makes up
// chunks of its own: `chunkSize` below, never sent to the server. The server's durable
// offset says which of them are acknowledged; the part of a chunk already sent shows as
// progress "in flight".
//
// create() and status() open the connection (`start` or `resume`) and keep it for send();
// status() therefore also finds out whether the upload can be resumed at all (404/410 from
// `resume` make the uploader start afresh). send() reads the File in slices of `max_frame`
// as it goes, never more than the credit allows and never more than a few frames queued in
// the browser. A pause closes the connection; once the server answers the close it has
// recorded every byte that reached it, so the next `resume` starts exactly there.
// complete() sends `done` and waits for `finished`. Cancel closes the connection and the
// uploader deletes the upload with DELETE /api/uploads/{id}, which works for any protocol.

import { AbortedError, ApiError, api, auth, serverUrl } from "./api.js";
import { sleep, trigger } from "./util.js";

const MiB = 1024 * 1024;
const PROGRESS_KEY = "ws"; // this transport's one entry in the uploader's in-flight map
const QUEUED_FRAMES = 8; // the most frames left in the browser's send queue (bufferedAmount)
const POLL_MS = 4; // how often a full send queue is looked at again (no event says "drained")
const REPORT_MS = 50; // progress reports to the uploader, at most this often
const OPEN_TIMEOUT_MS = 30_000; // connecting and answering `start`/`resume`
const STALL_MS = 60_000; // no byte leaves the browser and no credit comes: start again
const FINISH_TIMEOUT_MS = 300_000; // `done` to `finished`

/**
 * The transport's own chunk size for an upload of `size` bytes: 1 MiB, more for files over
 * about 100 GiB so that the uploader's list of chunk numbers stays short.
 */
export function wsChunkSize(size) {
  return Math.max(MiB, Math.ceil(size / 100_000));
}

export class WebSocketTransport {
  constructor() {
    this.connection = null; // open after create() or status(), for the next send()/complete()
    this.unacked = null; // {queue, control, ackedEnd} of the last send(), for complete()
  }

  async create({ name, size }) {
    this.unacked = null;
    // `name` is only metadata on the server; it allows 1-1024 characters.
    const shortName = Array.from(name).slice(0, 1024).join("") || "file";
    await this.drop();
    this.connection = await connect({ op: "start", name: shortName, size });
    const chunkSize = wsChunkSize(size);
    return {
      id: this.connection.ready.id,
      chunkSize,
      chunkCount: Math.ceil(size / chunkSize),
    };
  }

  async status(id) {
    await this.drop();
    this.unacked = null;
    const connection = await connect({ op: "resume", id });
    this.connection = connection;
    const reply = connection.finished ?? connection.ready;
    const size = reply.size;
    const chunkSize = wsChunkSize(size);
    const chunkCount = Math.ceil(size / chunkSize);
    const offset = connection.finished ? size : reply.offset;
    const first = offset >= size ? chunkCount : Math.floor(offset / chunkSize);
    const missing = [];
    for (let i = first; i < chunkCount; i++) missing.push(i);
    return {
      id: reply.id,
      size,
      chunkSize,
      chunkCount,
      missing,
      receivedBytes: offset,
      wireBytes: null,
      state: connection.finished ? "finished" : "receiving",
    };
  }

  async send(upload, file, queue, control) {
    if (control.signal.aborted) {
      this.drop();
      throw new AbortedError();
    }
    // Each upload is one connection, so the "parallel" setting caps connections.
    const release = await control.slots.acquire(control.signal);
    try {
      await this.stream(upload, file, queue, control);
    } catch (error) {
      this.drop();
      if (control.signal.aborted) throw new AbortedError();
      // A slice the browser cannot read fails the whole connection, like a network error
      // does. Tell them apart, so that a file that changed or vanished is not sent forever.
      if (error.status === 0) await checkReadable(file);
      throw error;
    } finally {
      release();
    }
  }

  async stream(upload, file, queue, control) {
    const { size, chunkSize } = upload;
    const chunkEnd = (index) => Math.min(size, (index + 1) * chunkSize);
    let connection = this.connection;
    if (!usable(connection)) {
      // Waiting for a slot may have outlived the connection status() opened.
      await this.drop();
      connection = this.connection = await connect({ op: "resume", id: upload.id });
    }
    const ws = connection.ws;
    // Bytes the uploader counts as acknowledged: everything before the first queued chunk.
    const progress = { queue, control, ackedEnd: queue.length ? queue[0] * chunkSize : size };
    this.unacked = progress;
    let position = connection.finished ? size : connection.ready.offset;
    const maxFrame = connection.ready?.max_frame ?? MiB;

    let lastReport = 0;
    const report = (onWire, force = false) => {
      const now = performance.now();
      if (!force && now - lastReport < REPORT_MS) return;
      lastReport = now;
      ackUpTo(progress, connection.durable, chunkEnd);
      control.onProgress(PROGRESS_KEY, Math.max(0, onWire - progress.ackedEnd));
    };
    const stall = new StallWatch(() => ws.bufferedAmount, () => connection.durable);
    const check = () => {
      if (connection.failure) throw connection.failure;
      if (control.signal.aborted) throw new AbortedError();
      if (stall.stalled()) {
        throw new ApiError(0, "STALLED", `no progress for ${STALL_MS / 1000} s`);
      }
    };
    const wait = (ms) => sleep(ms, { signal: control.signal, wake: connection.changed() });

    report(position, true);
    while (position < size && !control.stopping()) {
      check();
      const end = Math.min(position + maxFrame, size);
      if (end > connection.limit) {
        report(position - ws.bufferedAmount);
        await wait(REPORT_MS); // a `credit` message wakes this up at once
        continue;
      }
      if (ws.bufferedAmount > QUEUED_FRAMES * maxFrame) {
        report(position - ws.bufferedAmount);
        await sleep(POLL_MS, { signal: control.signal });
        continue;
      }
      // A Blob slice, not its bytes: the browser reads it from disk as it sends it, which
      // here is about twice as fast as reading an ArrayBuffer first and sending that.
      // bufferedAmount counts it at once, so the queue check above bounds the reading too.
      ws.send(file.slice(position, end));
      stall.touch();
      position = end;
      report(position - ws.bufferedAmount);
    }

    // Everything is queued: let the browser's send queue drain so that progress reaches
    // the end, then complete() sends `done` on this connection.
    while (ws.bufferedAmount > 0 && !control.stopping()) {
      check();
      report(position - ws.bufferedAmount);
      await wait(REPORT_MS);
    }
    if (control.stopping()) {
      if (control.signal.aborted) throw new AbortedError();
      // Pause: close. The server answers the close only once it has recorded every byte it
      // received, and the browser sends what it has queued before the close, so after a
      // clean close everything sent is on the server.
      this.connection = null;
      const clean = await connection.close();
      if (clean) connection.durable = Math.max(connection.durable, position);
      report(connection.durable, true);
      return;
    }
    report(position, true);
  }

  async complete(id, sha256) {
    let connection = this.connection;
    if (!usable(connection) || (connection.ready ?? connection.finished).id !== id) {
      await this.drop();
      connection = this.connection = await connect({ op: "resume", id });
    }
    if (!connection.finished) {
      connection.send(sha256 ? { op: "done", sha256 } : { op: "done" });
      await connection.until(() => connection.finished, FINISH_TIMEOUT_MS);
    }
    const finished = connection.finished;
    this.connection = null;
    connection.close();
    // The last window became durable with `done`: acknowledge the chunks it held.
    const progress = this.unacked;
    this.unacked = null;
    if (progress) {
      ackUpTo(progress, finished.size, (index) =>
        Math.min(finished.size, (index + 1) * wsChunkSize(finished.size)),
      );
      progress.control.onProgress(PROGRESS_KEY, 0);
    }
    return {
      fileId: finished.id,
      name: null,
      size: finished.size,
      sha256: finished.sha256,
      url: finished.url,
    };
  }

  async remove(id) {
    await this.drop();
    await api("DELETE", `/api/uploads/${encodeURIComponent(id)}`);
  }

  /**
   * Close the connection, if any (the server keeps what it received). The promise resolves
   * once the server answered the close, after which the upload is free for the next one.
   */
  drop() {
    const connection = this.connection;
    this.connection = null;
    return connection ? connection.close() : Promise.resolve(false);
  }
}

/** Tell the uploader about every queued chunk that ends at or before `durable`. */
function ackUpTo(progress, durable, chunkEnd) {
  const { queue, control } = progress;
  while (queue.length > 0 && chunkEnd(queue[0]) <= durable) {
    const index = queue.shift();
    const end = chunkEnd(index);
    control.onAck(index, end - progress.ackedEnd);
    progress.ackedEnd = end;
  }
}

function usable(connection) {
  return Boolean(
    connection &&
      !connection.failure &&
      !connection.closed &&
      (connection.ready || connection.finished),
  );
}

async function checkReadable(file) {
  try {
    await file.slice(0, 1).arrayBuffer();
  } catch (error) {
    throw new ApiError(-1, "FILE_UNREADABLE", `the file can no longer be read (${error.name})`);
  }
}

/**
 * Open a connection and send `opening` (`start` or `resume`) with the page's token, if it
 * has one. Resolves once the server answered `ready` (or `finished`, for a `resume` of an
 * upload already done). ERR_UNAUTHORIZED asks the person for a token, as the HTTP API does.
 */
async function connect(opening) {
  for (;;) {
    const token = auth.token;
    const connection = new Connection();
    try {
      await connection.until(() => connection.open, OPEN_TIMEOUT_MS);
      connection.send(token ? { ...opening, token } : opening);
      await connection.until(() => connection.ready || connection.finished, OPEN_TIMEOUT_MS);
      return connection;
    } catch (error) {
      connection.close();
      if (error.status !== 401) throw error;
      await auth.renew(token, error);
    }
  }
}

/** One WebSocket to /api/ws and what the server said on it. */
class Connection {
  constructor() {
    const url = new URL(serverUrl("api/ws"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.open = false;
    this.closed = false;
    this.closing = false; // we closed it: its end is no failure
    this.ready = null;
    this.finished = null;
    this.failure = null; // an ApiError once the connection cannot go on
    this.durable = 0; // every byte before this offset is durable on the server
    this.limit = 0; // the credit: no byte at or past this offset may be sent
    this.closedCleanly = trigger();
    this.wake = trigger();
    this.ws.onopen = () => {
      this.open = true;
      this.notify();
    };
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = (event) => {
      this.closed = true;
      if (!this.failure && !this.finished && !this.closing) {
        this.failure = closeError(event);
      }
      this.closedCleanly.resolve(event.wasClean && event.code === 1000);
      this.notify();
    };
  }

  receive(data) {
    let message = null;
    try {
      message = typeof data === "string" ? JSON.parse(data) : null;
    } catch {
      message = null;
    }
    if (!message || typeof message.op !== "string") {
      this.fail(new ApiError(502, "BAD_REPLY", "the server sent something unexpected"));
      return;
    }
    if (message.op === "ready") {
      this.ready = message;
      this.durable = message.offset;
      this.limit = message.offset + message.credit;
    } else if (message.op === "credit") {
      this.durable = Math.max(this.durable, message.offset);
      this.limit = Math.max(this.limit, message.offset + message.credit);
    } else if (message.op === "finished") {
      this.finished = message;
      this.durable = message.size;
    } else if (message.op === "error") {
      this.failure ??= new ApiError(
        Number.isInteger(message.status) ? message.status : 500,
        message.code ?? "ERR_INTERNAL",
        message.message ?? "the server refused the upload",
        message,
      );
    }
    this.notify();
  }

  fail(error) {
    this.failure ??= error;
    this.close();
    this.notify();
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  /** A promise resolved at the next message or state change. */
  changed() {
    return this.wake.promise;
  }

  notify() {
    const wake = this.wake;
    this.wake = trigger();
    wake.resolve();
  }

  /** Wait until `predicate()` holds; rejects with the connection's failure or a timeout. */
  async until(predicate, timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (predicate()) return;
      if (this.failure) throw this.failure;
      if (this.closed) throw new ApiError(0, "NETWORK", "the connection closed");
      const left = deadline - performance.now();
      if (left <= 0) {
        this.fail(new ApiError(0, "TIMEOUT", "the server did not answer in time"));
        throw this.failure;
      }
      await sleep(Math.min(left, 1000), { wake: this.changed() });
    }
  }

  /** Close (1000) and resolve to true once the server answered the close cleanly. */
  close() {
    this.closing = true;
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(1000);
    }
    if (this.closed) return Promise.resolve(false);
    return Promise.race([this.closedCleanly.promise, sleep(10_000).then(() => false)]);
  }
}

/** The error a connection's unexpected end stands for. */
function closeError(event) {
  // 4000 + status: the server said why (its `error` message usually came first).
  if (event.code >= 4000 && event.code < 5000) {
    return new ApiError(event.code - 4000, event.reason || `HTTP_${event.code - 4000}`, "refused");
  }
  if (event.code === 1011) return new ApiError(500, "ERR_INTERNAL", "server error");
  return new ApiError(0, "NETWORK", `connection lost (${event.code})`);
}

/**
 * Notices a connection on which nothing moves: no frame sent, no byte leaving the browser's
 * queue, no credit. Browsers notice a dead TCP connection only after many minutes.
 */
class StallWatch {
  constructor(buffered, durable) {
    this.buffered = buffered;
    this.durable = durable;
    this.last = [buffered(), durable()];
    this.since = performance.now();
  }

  stalled() {
    const now = [this.buffered(), this.durable()];
    if (now[0] < this.last[0] || now[1] > this.last[1]) this.touch();
    this.last = now;
    return performance.now() - this.since > STALL_MS;
  }

  /** Something moved (a frame was sent). */
  touch() {
    this.since = performance.now();
  }
}
