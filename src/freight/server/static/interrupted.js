// "Interrupted uploads": what this browser was sending when the page was closed or reloaded.
//
// A page cannot reopen a file by itself, so each entry (from the resume store) shows the name,
// size and how much the server holds, and asks the person to pick the file again. The picked
// file must be the same one (identity.js) before the upload carries on; a different file of
// the same name is refused with the reason, and nothing of it is sent.

import { api } from "./api.js";
import { mismatch } from "./identity.js";
import * as store from "./resume-store.js";
import { formatBytes, formatPercent, sleep } from "./util.js";
import { h, progressBar, setProgress } from "./views.js";

/** Name, size and lastModified of a record; old records have them only in their key. */
function describe(record) {
  const parts = record.key.split("|");
  const lastModified = Number(parts.pop());
  const size = Number(parts.pop());
  return {
    name: record.name ?? parts.join("|"),
    size: record.size ?? size,
    lastModified: record.lastModified ?? lastModified,
  };
}

export class InterruptedList {
  /**
   * `onResume(file)` hands a checked file to the uploads; `activeIds()` is the set of upload
   * ids this tab took up again (their records are not interrupted any more).
   */
  constructor(section, list, { onResume, activeIds }) {
    this.section = section;
    this.list = list;
    this.onResume = onResume;
    this.activeIds = activeIds;
    this.entries = new Map(); // file key -> entry
  }

  load() {
    const active = this.activeIds();
    for (const record of store.listUploads()) {
      if (active.has(record.id) || this.entries.has(record.key)) continue;
      const entry = this.createEntry(record);
      this.entries.set(record.key, entry);
      this.list.append(entry.element);
      this.askServer(entry);
    }
    this.sync();
  }

  /** Drop entries that this tab took up again or that left the store. */
  sync() {
    const active = this.activeIds();
    for (const [key, entry] of this.entries) {
      if (active.has(entry.record.id) || store.loadUpload(key)?.id !== entry.record.id) {
        this.remove(entry);
      }
    }
    this.section.hidden = this.entries.size === 0;
  }

  remove(entry) {
    entry.element.remove();
    this.entries.delete(entry.record.key);
    this.section.hidden = this.entries.size === 0;
  }

  createEntry(record) {
    const { name, size } = describe(record);
    const progress = progressBar(`Progress of the interrupted upload of ${name}`);
    const meta = h("div", { class: "meta" }, `${formatBytes(size)} · asking the server…`);
    const error = h("p", { class: "error", role: "alert", hidden: true });
    const input = h("input", {
      type: "file",
      hidden: true,
      "aria-label": `The file ${name}, to resume its upload`,
    });
    const pick = h(
      "button",
      {
        type: "button",
        class: "button small primary",
        "data-action": "pick",
        "aria-label": `Pick ${name} to resume its upload`,
      },
      "Pick the file to resume",
    );
    const forget = h(
      "button",
      {
        type: "button",
        class: "button small ghost",
        "data-action": "forget",
        "aria-label": `Forget the interrupted upload of ${name}`,
      },
      "Forget",
    );
    const element = h(
      "li",
      { class: "item interrupted", "data-key": record.key, "data-upload-id": record.id },
      h(
        "div",
        { class: "item-head" },
        h("span", { class: "name", title: name }, name),
        h("span", { class: "badge" }, "Interrupted"),
      ),
      progress.bar,
      meta,
      error,
      h("div", { class: "actions" }, pick, forget, input),
    );
    const entry = { record, element, progress, meta, error };
    pick.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      const file = input.files?.[0];
      input.value = "";
      if (file) this.picked(entry, file);
    });
    forget.addEventListener("click", () => this.forget(entry));
    return entry;
  }

  async askServer(entry) {
    const { size } = describe(entry.record);
    try {
      const status = await api("GET", `/api/uploads/${encodeURIComponent(entry.record.id)}`);
      if (status.state === "finished") {
        // It was completed just before the page went away: it is among the stored files.
        store.forget(entry.record.key);
        this.remove(entry);
        return;
      }
      const received = status.received_bytes ?? 0;
      setProgress(entry.progress, received, size);
      entry.element.dataset.receivedBytes = String(received);
      entry.meta.textContent =
        `${formatBytes(received)} of ${formatBytes(size)} on the server · ` +
        formatPercent(received, size);
    } catch (error) {
      entry.meta.textContent = error.gone
        ? `${formatBytes(size)} · the server no longer has it: picking the file sends it again`
        : `${formatBytes(size)} · progress unknown (${error.message})`;
    }
  }

  async picked(entry, file) {
    const why = await mismatch({ ...entry.record, ...describe(entry.record) }, file);
    entry.error.textContent = why ? `Not resumed: ${why}` : "";
    entry.error.hidden = !why;
    if (why) return;
    this.remove(entry);
    this.onResume(file);
  }

  async forget(entry) {
    this.remove(entry);
    store.forget(entry.record.key);
    // A request the reload cut off may hold the upload for a moment (423): try a few times.
    // If it never works, the server's expiry removes the upload later.
    for (let attempt = 1; attempt <= 6; attempt++) {
      try {
        await api("DELETE", `/api/uploads/${encodeURIComponent(entry.record.id)}`);
        return;
      } catch (error) {
        if (!error.retryable) return;
        await sleep(250 * 2 ** (attempt - 1));
      }
    }
  }
}
