// The page: settings, drag and drop, the token dialog, and the three lists.

import { api, auth, listAll } from "./api.js";
import { followEvents } from "./events.js";
import { InterruptedList } from "./interrupted.js";
import { LiveList } from "./live-list.js";
import { OverallProgress } from "./overall.js";
import { knownUploadIds } from "./resume-store.js";
import { TRANSPORTS } from "./transports.js";
import { State, Upload } from "./uploader.js";
import { Slots } from "./util.js";
import { UploadRow, h, renderFiles } from "./views.js";

const SETTINGS_KEY = "freight.settings.v1";
const $ = (id) => document.getElementById(id);

const settings = loadSettings();
const slots = new Slots(settings.parallel);
const rows = new Map(); // file key -> UploadRow
let renderQueued = false;

function loadSettings() {
  const defaults = {
    parallel: 4,
    chunkSize: 0,
    transport: "chunks",
    hash: true,
    checkDigests: true,
  };
  try {
    return { ...defaults, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") };
  } catch {
    return defaults;
  }
}

function setUpSettings() {
  const parallel = $("parallel");
  const chunkSize = $("chunk-size");
  const transport = $("transport");
  const hash = $("hash");
  const digests = $("digests");
  transport.replaceChildren(...TRANSPORTS.map((t) => h("option", { value: t.id }, t.label)));
  parallel.value = settings.parallel;
  chunkSize.value = String(settings.chunkSize);
  transport.value = settings.transport;
  hash.checked = settings.hash;
  digests.checked = settings.checkDigests;
  if (!globalThis.crypto?.subtle) {
    digests.checked = false;
    digests.disabled = true;
    digests.parentElement.title = "Needs HTTPS (or localhost) for the browser's crypto API";
  }
  // Chunk size and per-chunk digests mean nothing to a transport without chunks (WebSocket).
  const showTransport = () => {
    const chunks = transport.value === "chunks";
    chunkSize.disabled = !chunks;
    digests.disabled = !chunks || !globalThis.crypto?.subtle;
  };
  showTransport();
  const save = () => {
    showTransport();
    settings.parallel = Math.max(1, Math.min(8, Number.parseInt(parallel.value, 10) || 4));
    settings.chunkSize = Number.parseInt(chunkSize.value, 10) || 0;
    settings.transport = transport.value;
    settings.hash = hash.checked;
    settings.checkDigests = digests.checked && Boolean(globalThis.crypto?.subtle);
    slots.setCapacity(settings.parallel);
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  };
  for (const input of [parallel, chunkSize, transport, hash, digests]) {
    input.addEventListener("change", save);
  }
}

// ---- uploads ---------------------------------------------------------------------------

function addFiles(files) {
  for (const file of files) {
    const key = `${file.name}|${file.size}|${file.lastModified}`;
    const existing = rows.get(key);
    if (existing && !existing.upload.finished) {
      existing.upload.resume(); // picked again while paused or failed: carry on
      continue;
    }
    existing?.element.remove();
    const upload = new Upload(file, settings, slots);
    const row = new UploadRow(upload, { onDismiss: dismiss });
    rows.set(key, row);
    $("uploads").prepend(row.element);
    upload.addEventListener("change", () => {
      if (upload.state === State.DONE) scheduleFilesRefresh();
      queueRender();
    });
    upload.start();
  }
  $("uploads-empty").hidden = rows.size > 0;
}

function dismiss(row) {
  row.element.remove();
  rows.delete(row.upload.key);
  $("uploads-empty").hidden = rows.size > 0;
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    for (const row of rows.values()) row.render();
    overall.render();
    interrupted.sync();
  });
}

function setUpDropAndPick() {
  const input = $("file-input");
  $("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles(Array.from(input.files ?? []));
    input.value = "";
  });
  const zone = $("drop-zone");
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    depth++;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files.length) return;
    event.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    addFiles(Array.from(event.dataTransfer.files));
  });
}

// ---- token -----------------------------------------------------------------------------

function askForToken(rejected) {
  const dialog = $("token-dialog");
  const input = $("token-input");
  $("token-error").hidden = !rejected;
  input.value = "";
  return new Promise((resolve) => {
    const finish = (token) => {
      dialog.removeEventListener("close", onClose);
      resolve(token);
    };
    const onClose = () => finish(dialog.returnValue === "ok" ? input.value.trim() || null : null);
    dialog.addEventListener("close", onClose);
    $("token-cancel").onclick = () => dialog.close("cancel");
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

// ---- server lists ----------------------------------------------------------------------

let filesTimer = null;
let live = null;

function scheduleFilesRefresh() {
  clearTimeout(filesTimer);
  filesTimer = setTimeout(refreshFiles, 200);
}

async function refreshFiles() {
  try {
    const files = await listAll("/api/files", "files");
    files.sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
    renderFiles($("files"), $("files-empty"), files, deleteFile);
  } catch (error) {
    $("files-empty").hidden = false;
    $("files-empty").textContent = `Could not list files: ${error.message}`;
  }
}

async function deleteFile(file) {
  try {
    await api("DELETE", `/api/files/${encodeURIComponent(file.id)}`);
  } catch (error) {
    if (!error.gone) alert(`Could not delete ${file.name}: ${error.message}`);
  }
  refreshFiles();
}

function setConnection(connected) {
  const status = $("connection");
  status.dataset.state = connected ? "live" : "offline";
  status.querySelector(".label").textContent = connected ? "Live" : "Reconnecting…";
}

function setUpLive() {
  const mine = () => {
    const ids = knownUploadIds();
    for (const row of rows.values()) if (row.upload.id) ids.add(row.upload.id);
    return ids;
  };
  let ids = mine();
  // Paused here, or interrupted by a reload and not taken up again: not a stall.
  const paused = (id) =>
    [...rows.values()].some((row) => row.upload.id === id && row.upload.pauseRequested) ||
    (ids.has(id) && ![...rows.values()].some((row) => row.upload.id === id));
  live = new LiveList($("live"), $("live-empty"), $("live-more"), (id) => ids.has(id), paused);
  followEvents({
    signal: new AbortController().signal,
    onOpen: () => live.clear(),
    onStatus: (connected) => {
      setConnection(connected);
      live.setConnected(connected);
    },
    onEvent: (kind, data) => {
      ids = mine();
      live.apply(kind, data);
      if (kind === "finished" || kind === "deleted") scheduleFilesRefresh();
    },
  });
}

// ---- start -----------------------------------------------------------------------------

/**
 * A plain link cannot carry the bearer token, so on a server that wants one the page swaps
 * in a short-lived signed link (POST /api/files/ID/link) just before the browser follows it.
 */
function setUpSignedDownloads() {
  document.addEventListener("click", async (event) => {
    const link = event.target.closest?.("a[href^='/files/']");
    if (!link || !auth.token || link.dataset.signed) return;
    event.preventDefault();
    const id = decodeURIComponent(new URL(link.href).pathname.split("/").pop());
    try {
      const { url } = await api("POST", `/api/files/${encodeURIComponent(id)}/link`);
      const signed = document.createElement("a");
      signed.href = url;
      signed.download = link.getAttribute("download") ?? "";
      signed.dataset.signed = "1";
      document.body.append(signed);
      signed.click();
      signed.remove();
    } catch (error) {
      console.warn("could not make a download link", error);
    }
  });
}

const uploads = () => [...rows.values()].map((row) => row.upload);
const overall = new OverallProgress($("overall"), uploads);
const interrupted = new InterruptedList($("interrupted-block"), $("interrupted"), {
  onResume: (file) => addFiles([file]),
  activeIds: () => new Set(uploads().flatMap((u) => (u.id && !u.finished ? [u.id] : []))),
});

auth.prompt = askForToken;
setUpSettings();
setUpDropAndPick();
$("refresh-files").addEventListener("click", refreshFiles);
auth.addEventListener("change", refreshFiles);
setInterval(() => {
  // Keep rates and ETAs honest when no progress event arrives (a stalled connection).
  for (const row of rows.values()) {
    if (row.upload.state === State.UPLOADING) row.upload.meter.add(row.upload.doneBytes);
  }
  queueRender();
  live?.render();
}, 500);
window.addEventListener("beforeunload", (event) => {
  if ([...rows.values()].some((row) => row.upload.state === State.UPLOADING)) {
    event.preventDefault(); // the upload resumes after a reload, but say so before leaving
  }
});
setUpSignedDownloads();
interrupted.load();
refreshFiles().then(setUpLive);
document.body.dataset.ready = "1";
