// Web Worker: SHA-256 of a File, read piece by piece with Blob.slice so the file never sits
// in memory. One job at a time; the page queues jobs and may cancel them.
//
// In:  {type: "hash", job, file, state}   state: a saved Sha256 state to start from, or null
//      {type: "cancel", job}
// Out: {type: "progress", job, bytes}
//      {type: "checkpoint", job, state}   every CHECKPOINT bytes, to resume hashing later
//      {type: "done", job, sha256} | {type: "error", job, message} | {type: "cancelled", job}

import { Sha256 } from "./sha256.js";

const PIECE = 4 * 1024 * 1024;
const CHECKPOINT = 64 * 1024 * 1024;
const cancelled = new Set();
const queue = [];
let running = false;

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "hash") {
    queue.push(message);
    pump();
  } else if (message.type === "cancel") {
    cancelled.add(message.job);
  }
};

async function pump() {
  if (running) return;
  running = true;
  while (queue.length > 0) {
    const message = queue.shift();
    try {
      await hash(message);
    } catch (error) {
      self.postMessage({ type: "error", job: message.job, message: String(error) });
    }
    cancelled.delete(message.job);
  }
  running = false;
}

async function hash({ job, file, state }) {
  const usable = state && state.bytes <= file.size && state.bytes % 64 === 0;
  const sha = new Sha256(usable ? state : null);
  let offset = usable ? state.bytes : 0;
  while (offset < file.size) {
    if (cancelled.has(job)) {
      self.postMessage({ type: "cancelled", job });
      return;
    }
    const end = Math.min(offset + PIECE, file.size);
    sha.update(new Uint8Array(await file.slice(offset, end).arrayBuffer()));
    offset = end;
    self.postMessage({ type: "progress", job, bytes: offset });
    if (offset % CHECKPOINT === 0 && offset < file.size) {
      self.postMessage({ type: "checkpoint", job, state: sha.saveState() });
    }
  }
  self.postMessage({ type: "done", job, sha256: sha.hexDigest() });
}
