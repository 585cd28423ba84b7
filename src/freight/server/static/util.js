// Small helpers: formatting, a resizable semaphore, interruptible sleeps.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function formatRate(bytesPerSecond) {
  return bytesPerSecond > 0 ? `${formatBytes(bytesPerSecond)}/s` : "–";
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 9.95) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

export function formatPercent(done, total) {
  if (!total) return done > 0 ? "100%" : "0%";
  const percent = (100 * done) / total;
  return percent >= 99.95 && done < total ? "99.9%" : `${percent.toFixed(percent < 10 ? 1 : 0)}%`;
}

export function shortHash(hex) {
  return hex ? `${hex.slice(0, 12)}…${hex.slice(-6)}` : "";
}

/** A counting semaphore whose capacity can change while it is in use. */
export class Slots {
  constructor(capacity) {
    this.capacity = capacity;
    this.used = 0;
    this.waiters = [];
  }

  setCapacity(capacity) {
    this.capacity = capacity;
    this.wake();
  }

  /** Resolves to a release function once a slot is free; rejects if `signal` aborts first. */
  acquire(signal) {
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, signal, onAbort: null };
      if (signal) {
        if (signal.aborted) return reject(signal.reason);
        waiter.onAbort = () => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(signal.reason);
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      this.wake();
    });
  }

  wake() {
    while (this.used < this.capacity && this.waiters.length > 0) {
      const waiter = this.waiters.shift();
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      this.used++;
      let released = false;
      waiter.resolve(() => {
        if (released) return;
        released = true;
        this.used--;
        this.wake();
      });
    }
  }
}

/** Wait `ms`, or less if `wake` is resolved or `signal` aborts (then it rejects). */
export function sleep(ms, { signal, wake } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    if (signal?.aborted) return aborted();
    signal?.addEventListener("abort", aborted, { once: true });
    wake?.then(done, done);
  });
}

/** A promise with its resolve function, for "wait until someone says go". */
export function trigger() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export function base64(buffer) {
  let text = "";
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/** Transfer rate over a sliding window of samples, in bytes per second. */
export class RateMeter {
  constructor(windowMs = 4000) {
    this.windowMs = windowMs;
    this.samples = [];
  }

  reset() {
    this.samples = [];
  }

  add(bytes, now = performance.now()) {
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > this.windowMs) {
      this.samples.shift();
    }
  }

  get rate() {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? Math.max(0, ((b1 - b0) * 1000) / (t1 - t0)) : 0;
  }
}
