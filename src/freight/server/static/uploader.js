// One file's upload from start to finish, over any transport (transports.js).
//
// States and what moves between them (the run loop below is the only place that does):
//   starting   -> uploading      the server upload exists (resumed from localStorage or new)
//   uploading  -> pausing        pause(): no new chunks; chunks in flight finish
//   pausing    -> paused         nothing in flight any more
//   paused     -> starting       resume()
//   uploading  -> resuming       a retryable error: wait with backoff, then ask the server
//   resuming   -> starting          what it has and send only the missing chunks
//   uploading  -> finishing     every chunk acknowledged: complete
//   finishing  -> done
//   any        -> failed         an error retrying cannot fix; retry() starts over from starting
//                                 (a permanent one, e.g. 413 or 403, ends the upload for good:
//                                 hashing stops and there is no retry)
//   any        -> cancelled      cancel(): requests aborted, the server upload deleted
// If the server no longer knows the upload (404/410), its record is dropped and a new upload
// is created. Before anything is sent or hashed, the file is checked against the server's
// limits (restrictions.js) and, when a resume record exists, against the identity that
// record kept (identity.js); a refusal is a permanent failure.

import { AbortedError, refusal } from "./api.js";
import { hashFile } from "./hasher.js";
import { identityOf, mismatch } from "./identity.js";
import { checkRestrictions } from "./restrictions.js";
import * as store from "./resume-store.js";
import { TRANSPORTS, transportById } from "./transports.js";
import { RateMeter, sleep, trigger } from "./util.js";

export const State = Object.freeze({
  STARTING: "starting",
  UPLOADING: "uploading",
  PAUSING: "pausing",
  PAUSED: "paused",
  RESUMING: "resuming",
  FINISHING: "finishing",
  DONE: "done",
  FAILED: "failed",
  CANCELLED: "cancelled",
});

const ACTIVE = new Set([State.STARTING, State.UPLOADING, State.RESUMING, State.FINISHING]);
const MAX_WORKERS = 8; // the most the parallel setting allows; the shared Slots limit them

export function backoffMs(attempt) {
  const base = Math.min(30_000, 1000 * 2 ** Math.min(attempt - 1, 5));
  return base / 2 + Math.random() * (base / 2);
}

export class Upload extends EventTarget {
  /** settings: {transport, chunkSize, hash, checkDigests}; slots: the page's shared Slots. */
  constructor(file, settings, slots) {
    super();
    this.file = file;
    this.key = store.fileKey(file);
    this.settings = { ...settings };
    this.slots = slots;
    // An upload interrupted earlier carries on over the transport it started with, whatever
    // the setting is now: another transport would start it again from nothing.
    const saved = store.loadUpload(this.key)?.transport;
    this.transportId = TRANSPORTS.some((t) => t.id === saved) ? saved : settings.transport;
    this.transport = transportById(this.transportId);
    this.id = null;
    this.chunkSize = null;
    this.state = State.STARTING;
    this.detail = "";
    this.error = null;
    this.permanent = false; // failed for good: no retry, nothing more to do
    this.identity = null;
    this.resumed = false;
    this.restarted = false; // the server had forgotten the upload (expired): sent again whole
    this.alreadyOnServer = 0; // bytes the server had when this page resumed the upload
    this.sentBytes = 0; // chunk bytes this page got acknowledged
    this.sendingMs = 0; // time spent sending (not paused, not waiting to retry)
    this.sendingSince = null;
    this.ackedBytes = 0;
    this.inflight = new Map();
    this.meter = new RateMeter();
    this.result = null;
    this.localSha256 = null;
    this.hashedBytes = 0;
    this.hashError = null;
    this.pauseRequested = false;
    this.cancelled = false;
    this.abort = new AbortController();
    this.wakeup = trigger();
    this.hashJob = null;
  }

  get size() {
    return this.file.size;
  }

  get doneBytes() {
    let sum = this.ackedBytes;
    for (const loaded of this.inflight.values()) sum += loaded;
    return Math.min(sum, this.size);
  }

  get active() {
    return ACTIVE.has(this.state);
  }

  /** Nothing more will happen to this upload: done, cancelled or failed for good. */
  get finished() {
    return (
      this.state === State.DONE ||
      this.state === State.CANCELLED ||
      (this.state === State.FAILED && this.permanent)
    );
  }

  /** true: the server's SHA-256 equals the one computed here; false: it differs; null: unknown. */
  get verified() {
    if (!this.result?.sha256 || !this.localSha256) return null;
    return this.result.sha256 === this.localSha256;
  }

  start() {
    this.begin();
    return this;
  }

  async begin() {
    try {
      await this.preflight();
    } catch (error) {
      if (!this.cancelled) this.failPermanently(error);
      return;
    }
    if (this.cancelled) return;
    if (this.settings.hash) this.startHash();
    await this.run();
  }

  /** Refuse the file before a byte of it is sent or hashed; see restrictions.js, identity.js. */
  async preflight() {
    this.setState(State.STARTING, "checking the file");
    await checkRestrictions(this.file);
    const record = store.loadUpload(this.key);
    if (record && record.transport === this.transportId) {
      const why = await mismatch(record, this.file);
      if (why) {
        const hint = " Forget the interrupted upload to send this file as a new one.";
        throw refusal("NOT_THE_SAME_FILE", why + hint);
      }
    }
    this.setState(State.STARTING);
  }

  failPermanently(error) {
    this.error = error;
    this.permanent = true;
    this.hashJob?.cancel();
    this.inflight.clear();
    this.setState(State.FAILED, error.message);
  }

  pause() {
    if (!ACTIVE.has(this.state) || this.state === State.FINISHING) return;
    this.pauseRequested = true;
    this.setState(this.state === State.UPLOADING ? State.PAUSING : this.state);
    this.poke();
  }

  resume() {
    if (this.permanent) return;
    if (!this.pauseRequested && this.state !== State.FAILED && this.state !== State.RESUMING) {
      return;
    }
    this.pauseRequested = false;
    this.poke();
  }

  async cancel() {
    if (this.state === State.DONE || this.cancelled) return;
    this.cancelled = true;
    this.abort.abort(new AbortedError());
    this.hashJob?.cancel();
    this.setState(State.CANCELLED);
    store.forget(this.key);
    this.poke();
    if (this.id) await this.removeFromServer();
  }

  /**
   * DELETE the server's upload. The requests just aborted may still hold it for a moment
   * (423 until the server notices they are gone), so busy answers are retried a few times;
   * if it never works, the server's expiry removes the upload later.
   */
  async removeFromServer() {
    for (let attempt = 1; attempt <= 8; attempt++) {
      try {
        await this.transport.remove(this.id);
        return;
      } catch (error) {
        if (!error.retryable) return;
        await sleep(Math.min(4000, 250 * 2 ** (attempt - 1)));
      }
    }
  }

  /** Cut a wait short: a backoff sleep, a pause or a failure waiting for retry(). */
  poke() {
    this.wakeup.resolve();
    this.wakeup = trigger();
  }

  setState(state, detail = "") {
    const sending = state === State.UPLOADING || state === State.PAUSING;
    if (sending && this.sendingSince === null) this.sendingSince = performance.now();
    if (!sending && this.sendingSince !== null) {
      this.sendingMs += performance.now() - this.sendingSince;
      this.sendingSince = null;
    }
    this.state = state;
    this.detail = detail;
    if (state !== State.UPLOADING && state !== State.PAUSING) this.meter.reset();
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  async run() {
    let attempt = 0;
    while (!this.cancelled) {
      try {
        if (this.pauseRequested) {
          this.setState(State.PAUSED);
          await this.wakeup.promise;
          continue;
        }
        this.setState(State.STARTING, attempt > 0 ? "asking the server what it has" : "");
        const queue = await this.prepare();
        if (queue.length > 0) {
          this.setState(this.pauseRequested ? State.PAUSING : State.UPLOADING);
          await this.transport.send(this.uploadInfo(), this.file, queue, this.control());
          attempt = 0;
          if (this.pauseRequested || this.cancelled) continue;
        }
        await this.finish();
        return;
      } catch (error) {
        if (this.cancelled || error instanceof AbortedError) return;
        this.inflight.clear();
        if (error.gone && this.id) {
          store.forget(this.key);
          this.id = null;
          this.restarted = true;
          continue;
        }
        if (error.permanent) {
          this.failPermanently(error);
          return;
        }
        if (!error.retryable && error.status !== 409) {
          this.error = error;
          this.setState(State.FAILED, error.message);
          await this.wakeup.promise;
          this.error = null;
          attempt = 0;
          continue;
        }
        attempt++;
        const delay = backoffMs(attempt);
        this.setState(State.RESUMING, `${error.message}; retrying in ${Math.ceil(delay / 1000)} s`);
        await sleep(delay, { wake: this.wakeup.promise });
      }
    }
  }

  /** Find or create the server upload; resolve to the chunk indexes it still needs. */
  async prepare() {
    if (!this.id) {
      const record = store.loadUpload(this.key);
      if (record && record.transport === this.transportId) {
        this.id = record.id;
        this.resumed = true;
      }
    }
    if (this.id) {
      try {
        const status = await this.transport.status(this.id);
        if (status.size === this.size) {
          this.chunkSize = status.chunkSize;
          this.chunkCount = status.chunkCount;
          this.ackedBytes = this.size - this.bytesOf(status.missing);
          if (this.resumed && this.sentBytes === 0) this.alreadyOnServer = this.ackedBytes;
          return status.missing;
        }
      } catch (error) {
        if (!error.gone) throw error;
      }
      store.forget(this.key);
      this.id = null;
      this.resumed = false;
      this.restarted = true;
    }
    this.identity ??= await identityOf(this.file);
    const created = await this.transport.create({
      name: this.file.name,
      size: this.size,
      chunkSize: this.settings.chunkSize || null,
      sha256: null,
    });
    this.id = created.id;
    this.chunkSize = created.chunkSize;
    this.chunkCount = created.chunkCount;
    this.ackedBytes = 0;
    store.saveUpload(this.key, {
      ...this.identity,
      id: this.id,
      transport: this.transportId,
      chunkSize: this.chunkSize,
    });
    return Array.from({ length: this.chunkCount }, (_, i) => i);
  }

  bytesOf(indexes) {
    let total = 0;
    for (const index of indexes) {
      total += Math.min(this.chunkSize, this.size - index * this.chunkSize);
    }
    return total;
  }

  uploadInfo() {
    return { id: this.id, size: this.size, chunkSize: this.chunkSize, chunkCount: this.chunkCount };
  }

  control() {
    return {
      slots: this.slots,
      workers: MAX_WORKERS,
      signal: this.abort.signal,
      checkDigests: this.settings.checkDigests,
      stopping: () => this.pauseRequested || this.cancelled,
      onProgress: (index, loaded) => {
        if (loaded > 0) this.inflight.set(index, loaded);
        else this.inflight.delete(index);
        this.meter.add(this.doneBytes);
        this.changed();
      },
      onAck: (index, bytes) => {
        this.ackedBytes += bytes;
        this.sentBytes += bytes;
        this.meter.add(this.doneBytes);
        this.changed();
      },
    };
  }

  async finish() {
    this.setState(State.FINISHING);
    this.result = await this.transport.complete(this.id, this.localSha256);
    this.ackedBytes = this.size;
    store.forget(this.key);
    this.setState(State.DONE);
  }

  async startHash() {
    const saved = store.loadHashState(this.key);
    this.hashedBytes = saved?.bytes ?? 0;
    this.hashJob = hashFile(this.file, {
      state: saved,
      onProgress: (bytes) => {
        this.hashedBytes = bytes;
        this.changed();
      },
      onCheckpoint: (state) => {
        if (!this.cancelled && this.state !== State.DONE) store.saveHashState(this.key, state);
      },
    });
    try {
      this.localSha256 = await this.hashJob.done;
    } catch (error) {
      this.hashError = error.message;
    }
    this.changed();
  }
}
