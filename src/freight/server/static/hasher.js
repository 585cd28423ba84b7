// The page's side of the hashing worker: one shared worker, jobs run one after another.

let worker = null;
let nextJob = 1;
const jobs = new Map();

function ensureWorker() {
  if (worker) return worker;
  worker = new Worker(new URL("./hash-worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (event) => {
    const message = event.data;
    const job = jobs.get(message.job);
    if (!job) return;
    if (message.type === "progress") job.onProgress?.(message.bytes);
    else if (message.type === "checkpoint") job.onCheckpoint?.(message.state);
    else {
      jobs.delete(message.job);
      if (message.type === "done") job.resolve(message.sha256);
      else if (message.type === "cancelled") job.resolve(null);
      else job.reject(new Error(message.message));
    }
  };
  worker.onerror = (event) => {
    for (const job of jobs.values()) job.reject(new Error(event.message || "hash worker failed"));
    jobs.clear();
    worker = null;
  };
  return worker;
}

/**
 * Start hashing `file` in the worker. Returns `{done, cancel}`: `done` resolves to the hex
 * digest, or to null when cancelled. `state` (from an earlier checkpoint) skips what it covers.
 */
export function hashFile(file, { state = null, onProgress, onCheckpoint } = {}) {
  const id = nextJob++;
  const done = new Promise((resolve, reject) => {
    jobs.set(id, { resolve, reject, onProgress, onCheckpoint });
  });
  ensureWorker().postMessage({ type: "hash", job: id, file, state });
  return {
    done,
    cancel() {
      if (jobs.has(id)) worker?.postMessage({ type: "cancel", job: id });
    },
  };
}
