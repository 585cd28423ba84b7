// Transports move one upload's chunks to the server; everything else (resume records, pause,
// retries with backoff, progress, hashing) lives in uploader.js and is shared by all of them.
//
// A transport is an object with:
//   create({name, size, chunkSize, sha256})  -> {id, chunkSize, chunkCount}
//       chunkSize may be null to let the server choose; sha256 may be null.
//   status(id)  -> {id, size, chunkSize, chunkCount, missing, receivedBytes, wireBytes, state}
//       missing: array of chunk indexes the server does not have yet.
//   send(upload, file, queue, control)
//       Sends the chunks whose indexes are in `queue` (it takes them from the front) and
//       resolves when the queue is empty or control.stopping() turned true and nothing is in
//       flight any more. Rejects with the first error once every chunk in flight has settled.
//       upload: {id, size, chunkSize, chunkCount}
//       control: {slots, workers, signal, stopping(), checkDigests,
//                 onProgress(index, loadedBytes), onAck(index, bytes)}
//         slots: a Slots semaphore shared by every upload on the page (the "parallel" setting);
//         signal aborts requests in flight (cancel).
//   complete(id, sha256)  -> {fileId, name, size, sha256, url}   (sha256 may be null)
//   remove(id)
// Errors are ApiError (api.js): `retryable` and `gone` tell the uploader what to do.
//
// To add a transport (WebSocket, say), write one module with such a class and list it here.

import { ChunkTransport } from "./transport-chunks.js";
import { WebSocketTransport } from "./transport-ws.js";

export const TRANSPORTS = [
  { id: "chunks", label: "HTTP chunks (parallel PUT)", create: () => new ChunkTransport() },
  { id: "ws", label: "WebSocket (one stream)", create: () => new WebSocketTransport() },
];

export function transportById(id) {
  return (TRANSPORTS.find((t) => t.id === id) ?? TRANSPORTS[0]).create();
}
