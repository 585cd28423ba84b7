// What the page checks before it sends or hashes a byte of a file: the server's size limit
// and, if the page's file input names them in its `accept` attribute, the accepted types.
//
// The limit is the engine's `--max-size`, the same for every protocol; the tus OPTIONS answer
// (`Tus-Max-Size`) is where the server announces it. Without that header there is no limit.
// A drop bypasses the file dialog's own filter, so `accept` is checked here as well.

import { refusal, serverUrl, withAuth } from "./api.js";
import { formatBytes } from "./util.js";

// Asked once for a batch of files, and again a minute later: a restarted server may have
// another limit.
const KEEP_MS = 60_000;
let limits = null; // a promise of {maxSize}
let askedAt = 0;

/** The server's limits; null when it cannot be asked now (the check is then left to it). */
export async function serverLimits() {
  if (limits && performance.now() - askedAt > KEEP_MS) limits = null;
  if (!limits) {
    askedAt = performance.now();
    limits = askServer().catch((error) => {
      limits = null;
      throw error;
    });
  }
  try {
    return await limits;
  } catch {
    return null;
  }
}

async function askServer() {
  const reply = await withAuth(async (headers) => {
    const response = await fetch(serverUrl("files/"), {
      method: "OPTIONS",
      headers,
      cache: "no-store",
    });
    return { status: response.status, text: "", headers: response.headers };
  });
  if (reply.status !== 204 && reply.status !== 200) throw new Error(`HTTP ${reply.status}`);
  const header = reply.headers.get("Tus-Max-Size");
  const maxSize = header === null ? null : Number.parseInt(header, 10);
  return { maxSize: Number.isSafeInteger(maxSize) ? maxSize : null };
}

/** The page's accepted types: the `accept` attribute of its file input ("" accepts all). */
function acceptList() {
  const text = document.getElementById("file-input")?.getAttribute("accept") ?? "";
  return text
    .split(",")
    .map((item) => item.trim().toLowerCase())
    .filter(Boolean);
}

/** Whether `file` matches one of `accept` (".ext", "type/*" or "type/subtype"). */
export function accepts(file, accept) {
  if (accept.length === 0) return true;
  const name = file.name.toLowerCase();
  const type = (file.type || "").toLowerCase();
  return accept.some((item) => {
    if (item.startsWith(".")) return name.endsWith(item);
    if (item.endsWith("/*")) return type.startsWith(item.slice(0, -1));
    return type === item;
  });
}

/** Throws a refusal (a permanent ApiError) if `file` may not be sent; resolves otherwise. */
export async function checkRestrictions(file) {
  const accept = acceptList();
  if (!accepts(file, accept)) {
    throw refusal("TYPE_NOT_ACCEPTED", `This page accepts only ${accept.join(", ")} files.`);
  }
  const found = await serverLimits();
  const maxSize = found?.maxSize ?? null;
  if (maxSize !== null && file.size > maxSize) {
    throw refusal(
      "TOO_LARGE",
      `Too large: ${formatBytes(file.size)}, and this server accepts at most ` +
        `${formatBytes(maxSize)} (${maxSize} bytes). Nothing was sent.`,
    );
  }
}
