// The HTTP chunk transport: POST /api/uploads, then PUT /api/uploads/{id}/chunks/{n} for each
// chunk, several at once, in any order. XHR rather than fetch because fetch reports no upload
// progress. Bodies are Blob slices, so the file is read from disk as it is sent.

import { AbortedError, ApiError, api, errorFrom, serverUrl, withAuth } from "./api.js";
import { base64 } from "./util.js";

// A request that stops making progress is abandoned and retried. Before its first progress
// event it may be queued behind other requests (browsers open at most six HTTP/1.1
// connections per server, shared by every tab), so it gets longer.
const STALL_MS = 60_000;
const FIRST_PROGRESS_MS = 300_000;

export class ChunkTransport {
  async create({ name, size, chunkSize, sha256 }) {
    const request = { name, size };
    if (chunkSize) request.chunk_size = chunkSize;
    if (sha256) request.sha256 = sha256;
    const reply = await api("POST", "/api/uploads", { json: request });
    return { id: reply.id, chunkSize: reply.chunk_size, chunkCount: reply.chunk_count };
  }

  async status(id) {
    const reply = await api("GET", `/api/uploads/${encodeURIComponent(id)}`);
    return {
      id: reply.id,
      size: reply.size,
      chunkSize: reply.chunk_size,
      chunkCount: reply.chunk_count,
      missing: expandRanges(reply.missing ?? [], reply.chunk_count),
      receivedBytes: reply.received_bytes,
      wireBytes: reply.wire_bytes,
      state: reply.state,
    };
  }

  async send(upload, file, queue, control) {
    let failure = null;
    const worker = async () => {
      while (!failure && !control.stopping() && queue.length > 0) {
        const release = await control.slots.acquire(control.signal);
        try {
          if (failure || control.stopping()) return;
          const index = queue.shift();
          if (index === undefined) return;
          await this.sendChunk(upload, file, index, control);
        } catch (error) {
          failure ??= error;
        } finally {
          release();
        }
      }
    };
    await Promise.all(Array.from({ length: control.workers }, worker));
    if (failure) throw failure;
  }

  async sendChunk(upload, file, index, control) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.sendChunkOnce(upload, file, index, control);
      } catch (error) {
        // 422: the server computed another digest than ours, so the chunk was damaged on
        // the way (or read while the file changed). Send it again a couple of times.
        if (error.status !== 422 || attempt >= 3) throw error;
      }
    }
  }

  async sendChunkOnce(upload, file, index, control) {
    const start = index * upload.chunkSize;
    const end = Math.min(start + upload.chunkSize, upload.size);
    const body = file.slice(start, end);
    const headers = { "Content-Type": "application/octet-stream" };
    if (control.checkDigests && globalThis.crypto?.subtle) {
      // The digest lets the server refuse a chunk damaged on the way. The chunk is read once
      // for it and dropped; the request still sends the Blob slice, which Chromium streams
      // from disk far faster (about 10x here) than an ArrayBuffer body.
      const digest = await crypto.subtle.digest("SHA-256", await readBlob(body));
      headers["Content-Digest"] = `sha-256=:${base64(digest)}:`;
    }
    const url = serverUrl(`api/uploads/${encodeURIComponent(upload.id)}/chunks/${index}`);
    try {
      const reply = await withAuth((authHeaders) =>
        put(url, body, { ...headers, ...authHeaders }, control.signal, (loaded) =>
          control.onProgress(index, loaded),
        ),
      );
      if (reply.status < 200 || reply.status >= 300) throw errorFrom(reply.status, reply.text);
    } finally {
      control.onProgress(index, 0);
    }
    control.onAck(index, end - start);
  }

  async complete(id, sha256) {
    const path = `/api/uploads/${encodeURIComponent(id)}/complete`;
    const reply = await api("POST", path, { json: sha256 ? { sha256 } : {} });
    return {
      fileId: reply.file_id,
      name: reply.name,
      size: reply.size,
      sha256: reply.sha256,
      url: reply.url,
    };
  }

  async remove(id) {
    await api("DELETE", `/api/uploads/${encodeURIComponent(id)}`);
  }
}

/** Half-open chunk ranges `[[first, end), ...]` to a sorted list of chunk indexes. */
export function expandRanges(ranges, chunkCount) {
  const indexes = [];
  for (const [first, end] of ranges) {
    for (let i = Math.max(0, first); i < Math.min(end, chunkCount); i++) indexes.push(i);
  }
  return indexes;
}

async function readBlob(blob) {
  try {
    return await blob.arrayBuffer();
  } catch (error) {
    throw new ApiError(-1, "FILE_UNREADABLE", `the file can no longer be read (${error.name})`);
  }
}

/** One PUT with upload progress. Resolves to {status, text}; network failures throw status 0. */
function put(url, body, headers, signal, onProgress) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AbortedError());
    const xhr = new XMLHttpRequest();
    let lastProgress = performance.now();
    let limit = FIRST_PROGRESS_MS;
    // One coarse timer per request; re-arming a timer on every progress event made Chromium
    // upload several times slower here.
    const watchdog = setInterval(() => {
      if (performance.now() - lastProgress < limit) return;
      xhr.abort();
      finish();
      reject(new ApiError(0, "STALLED", `no progress for ${Math.round(limit / 1000)} s`));
    }, STALL_MS / 6);
    const finish = () => {
      clearInterval(watchdog);
      signal.removeEventListener("abort", abort);
    };
    const abort = () => {
      xhr.abort();
      finish();
      reject(new AbortedError());
    };
    xhr.open("PUT", url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      lastProgress = performance.now();
      limit = STALL_MS;
      onProgress(event.loaded);
    };
    xhr.onload = () => {
      finish();
      resolve({ status: xhr.status, text: xhr.responseText });
    };
    xhr.onerror = () => {
      finish();
      reject(new ApiError(0, "NETWORK", "network error"));
    };
    signal.addEventListener("abort", abort, { once: true });
    xhr.send(body);
  });
}
