// Is the file picked now the one an interrupted upload was sending?
//
// A File offers name, size and lastModified; another file can match all three (a copy that
// kept its date, a file rewritten in place by a tool that restores the date). So the resume
// record also keeps a SHA-256 of the file's first and last MiB. That costs two MiB of reading
// whatever the file's size, so checking a 50 GiB file takes milliseconds where a whole-file
// hash would take minutes, and the whole-file SHA-256 of an interrupted upload is usually not
// known yet anyway (the page hashes alongside the upload). Bytes changed only in the middle
// slip through this check; the SHA-256 comparison with the server's at the end catches them.

import { Sha256 } from "./sha256.js";
import { formatBytes } from "./util.js";

export const EDGE_BYTES = 1024 * 1024;
const PIECE_BYTES = 64 * 1024;

/**
 * Hex SHA-256 of the first and last MiB (the whole file when it is at most two MiB), read in
 * small pieces: the page never holds more than one piece of a file at a time.
 */
export async function fingerprint(file) {
  const headEnd = Math.min(file.size, EDGE_BYTES);
  const tailStart = Math.max(headEnd, file.size - EDGE_BYTES);
  const sha = new Sha256();
  for (const [start, end] of [
    [0, headEnd],
    [tailStart, file.size],
  ]) {
    for (let at = start; at < end; at += PIECE_BYTES) {
      const piece = file.slice(at, Math.min(end, at + PIECE_BYTES));
      sha.update(new Uint8Array(await piece.arrayBuffer()));
    }
  }
  return sha.hexDigest();
}

/** The identity a resume record keeps for `file`. */
export async function identityOf(file) {
  return {
    name: file.name,
    size: file.size,
    lastModified: file.lastModified,
    fingerprint: await fingerprint(file),
  };
}

/**
 * Why `file` is not the file of `record` (a sentence for the person), or null when it is.
 * Old records without an identity are matched by their key alone, as they always were.
 */
export async function mismatch(record, file) {
  if (record.name !== undefined && record.name !== file.name) {
    return `That is “${file.name}”, not “${record.name}”.`;
  }
  if (record.size !== undefined && record.size !== file.size) {
    return (
      `“${file.name}” is ${formatBytes(file.size)} (${file.size} bytes), but the interrupted ` +
      `upload is ${formatBytes(record.size)} (${record.size} bytes): not the same file.`
    );
  }
  if (record.lastModified !== undefined && record.lastModified !== file.lastModified) {
    const when = new Date(file.lastModified).toLocaleString();
    return `“${file.name}” was changed (${when}) since the upload started: not the same file.`;
  }
  if (record.fingerprint && record.fingerprint !== (await fingerprint(file))) {
    return (
      `“${file.name}” has the same name, size and date, but its first and last MiB differ ` +
      "from the interrupted upload's: not the same file."
    );
  }
  return null;
}
