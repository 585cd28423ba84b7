// The "On the server now" list: every upload in progress on the server, fed by /api/events.
// It marks what is not moving (paused here, stalled, or unknown while the server is down)
// rather than repeating the last speed it saw.

import { formatBytes, formatDuration, formatPercent, formatRate } from "./util.js";
import { h, progressBar, setProgress } from "./views.js";

const LIVE_SHOWN = 8;
// An upload of the server list whose bytes did not move for this long is marked stalled, and
// its rate is measured over this window only, so an old speed is never shown again.
const STALLED_MS = 5000;

/**
 * The "On the server now" list, fed by /api/events. `isPaused(id)`: this page knows the upload
 * is paused or interrupted here (the server cannot tell a pause from a stall).
 */
export class LiveList {
  constructor(list, empty, more, isMine, isPaused = () => false) {
    this.list = list;
    this.empty = empty;
    this.more = more;
    this.isMine = isMine;
    this.isPaused = isPaused;
    this.connected = true;
    this.entries = new Map();
  }

  /** While the event stream is down nothing listed is known to move: say so, not old speeds. */
  setConnected(connected) {
    this.connected = connected;
    this.list.dataset.connected = connected ? "1" : "0";
    this.render();
  }

  clear() {
    this.entries.clear();
    this.list.replaceChildren();
    this.render();
  }

  apply(kind, data) {
    if (kind === "snapshot") {
      this.clear();
      for (const entry of data.uploads ?? []) this.apply("progress", entry);
      return;
    }
    if (kind === "finished" || kind === "deleted") {
      this.entries.get(data.id)?.element.remove();
      this.entries.delete(data.id);
    } else if (kind === "created" || kind === "progress") {
      let entry = this.entries.get(data.id);
      if (!entry) {
        entry = this.createEntry(data);
        this.entries.set(data.id, entry);
        this.list.append(entry.element);
      }
      const bytes = data.transferred_bytes ?? data.received_bytes ?? 0;
      const now = performance.now();
      // Moving uploads sort first; one only seen in a snapshot may have sat idle for hours.
      if (kind === "created" || (entry.bytes !== null && bytes !== entry.bytes)) {
        entry.touched = now;
        entry.changed = now;
      }
      entry.bytes = bytes;
      entry.samples.push([now, bytes]);
      if (entry.samples.length > 6) entry.samples.shift();
      entry.data = data;
    }
    this.render();
  }

  createEntry(data) {
    const name = data.name || data.id;
    const progress = progressBar(`Server progress of ${name}`);
    const meta = h("div", { class: "meta" });
    const tag = h("span", { class: "tag" }, "this browser");
    const element = h(
      "li",
      { class: "item live", "data-upload-id": data.id },
      h("div", { class: "item-head" }, h("span", { class: "name", title: name }, name), tag),
      progress.bar,
      meta,
    );
    const seen = performance.now();
    return { element, progress, meta, tag, samples: [], data, bytes: null, touched: 0, seen };
  }

  render() {
    // The most recently active first; uploads left unfinished stay listed until they expire,
    // so only the first few are shown.
    const ordered = [...this.entries.values()].sort((a, b) => b.touched - a.touched);
    ordered.forEach((entry, position) => {
      entry.element.hidden = position >= LIVE_SHOWN;
      if (this.list.children[position] !== entry.element) {
        this.list.insertBefore(entry.element, this.list.children[position] ?? null);
      }
    });
    const hidden = ordered.length - LIVE_SHOWN;
    this.more.textContent = hidden > 0 ? `and ${hidden} more` : "";
    this.more.hidden = hidden <= 0;
    for (const entry of ordered.slice(0, LIVE_SHOWN)) {
      const { data, samples } = entry;
      const bytes = data.transferred_bytes ?? data.received_bytes ?? 0;
      const size = data.size;
      setProgress(entry.progress, bytes, size ?? 0);
      const state = this.liveState(entry);
      entry.element.dataset.liveState = state;
      const total = size == null ? "unknown size" : formatBytes(size);
      const parts = [`${formatBytes(bytes)} of ${total}`];
      if (size) parts.push(formatPercent(bytes, size));
      if (state === "moving") {
        const rate = recentRate(samples);
        if (rate > 0) parts.push(formatRate(rate));
      } else if (state === "stalled" && entry.changed) {
        const idle = (performance.now() - entry.changed) / 1000;
        parts.push(`stalled, no data for ${formatDuration(idle)}`);
      } else {
        parts.push(LIVE_STATE_LABELS[state]);
      }
      entry.meta.textContent = parts.join(" · ");
      entry.tag.hidden = !this.isMine(data.id);
    }
    this.empty.hidden = this.entries.size > 0;
  }

  /** "offline", "paused", "stalled" or "moving". */
  liveState(entry) {
    if (!this.connected) return "offline";
    if (this.isPaused(entry.data.id)) return "paused";
    const since = entry.changed ?? entry.seen;
    return performance.now() - since > STALLED_MS ? "stalled" : "moving";
  }
}

const LIVE_STATE_LABELS = {
  offline: "server unreachable",
  paused: "paused",
  stalled: "stalled",
};

/** Bytes per second over the samples of the last STALLED_MS; 0 when too few to tell. */
function recentRate(samples) {
  const now = performance.now();
  const recent = samples.filter(([t]) => now - t <= STALLED_MS);
  if (recent.length < 2) return 0;
  const [t0, b0] = recent[0];
  const [t1, b1] = recent[recent.length - 1];
  return t1 - t0 > 250 ? Math.max(0, ((b1 - b0) * 1000) / (t1 - t0)) : 0;
}
