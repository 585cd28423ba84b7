// What survives a reload: the upload id for each file, and how far its SHA-256 got.
//
// Keyed by name, size and lastModified, the only identity a re-picked File offers. Another
// file that matches all three is told apart by the fingerprint the record keeps (identity.js);
// the SHA-256 check at the end catches what even that misses.

const PREFIX = "freight.resume.v1|";
const HASH_PREFIX = "freight.hash.v1|";

export function fileKey(file) {
  return `${file.name}|${file.size}|${file.lastModified}`;
}

function read(key) {
  try {
    return JSON.parse(localStorage.getItem(key) ?? "null");
  } catch {
    return null;
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: resuming after a reload will not work, uploading still does.
  }
}

/**
 * `{id, transport, chunkSize, savedAt, name, size, lastModified, fingerprint}` or null (the
 * last four are missing from records written by older pages).
 */
export function loadUpload(key) {
  return read(PREFIX + key);
}

export function saveUpload(key, record) {
  write(PREFIX + key, { ...record, savedAt: Date.now() });
}

/** A saved Sha256 state (`{words, bytes}`) or null. */
export function loadHashState(key) {
  return read(HASH_PREFIX + key);
}

export function saveHashState(key, state) {
  if (state) write(HASH_PREFIX + key, state);
}

export function forget(key) {
  localStorage.removeItem(PREFIX + key);
  localStorage.removeItem(HASH_PREFIX + key);
}

/** Upload ids this browser is still working on, to tell them apart in the server's list. */
export function knownUploadIds() {
  const ids = new Set();
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key?.startsWith(PREFIX)) {
      const record = read(key);
      if (record?.id) ids.add(record.id);
    }
  }
  return ids;
}

/** Every saved upload record, as `{key, ...record}`, the most recent first. */
export function listUploads() {
  const records = [];
  for (let i = 0; i < localStorage.length; i++) {
    const storageKey = localStorage.key(i);
    if (!storageKey?.startsWith(PREFIX)) continue;
    const record = read(storageKey);
    if (record?.id) records.push({ ...record, key: storageKey.slice(PREFIX.length) });
  }
  return records.sort((a, b) => (b.savedAt ?? 0) - (a.savedAt ?? 0));
}
