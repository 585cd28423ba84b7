// DOM for this tab's uploads and the stored files (the server list is in live-list.js).
// No framework: each row is built once and updated in place.

import { State } from "./uploader.js";
import { formatBytes, formatDuration, formatPercent, formatRate, shortHash } from "./util.js";


const STATE_LABELS = {
  [State.STARTING]: "Starting…",
  [State.UPLOADING]: "Uploading",
  [State.PAUSING]: "Pausing…",
  [State.PAUSED]: "Paused",
  [State.RESUMING]: "Resuming…",
  [State.FINISHING]: "Finishing…",
  [State.DONE]: "Done",
  [State.FAILED]: "Failed",
  [State.CANCELLED]: "Cancelled",
};

/** Create an element: `h("span", {class: "x"}, "text", child)`. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.filter((c) => c !== null && c !== undefined));
  return element;
}

export function progressBar(label) {
  const fill = h("div", { class: "fill" });
  const bar = h(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": "0",
    },
    fill,
  );
  return { bar, fill };
}

export function setProgress({ bar, fill }, done, total) {
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  fill.style.transform = `scaleX(${fraction})`;
  bar.setAttribute("aria-valuenow", String(Math.floor(fraction * 100)));
}

/** One row of the "Uploads" list, bound to an Upload. */
export class UploadRow {
  constructor(upload, { onDismiss }) {
    this.upload = upload;
    const name = upload.file.name;
    this.badge = h("span", { class: "badge", "aria-live": "polite" });
    this.progress = progressBar(`Upload progress of ${name}`);
    this.bytes = h("span", { class: "bytes" });
    this.percent = h("span", { class: "percent" });
    this.rate = h("span", { class: "rate" });
    this.eta = h("span", { class: "eta" });
    this.detail = h("p", { class: "detail" });
    this.hash = h("p", { class: "hash" });
    this.pauseButton = h("button", {
      type: "button",
      class: "button small",
      "data-action": "pause",
      onclick: () => this.togglePause(),
    });
    this.cancelButton = h(
      "button",
      {
        type: "button",
        class: "button small ghost",
        "data-action": "cancel",
        "aria-label": `Cancel ${name}`,
        onclick: () => upload.cancel(),
      },
      "Cancel",
    );
    this.dismissButton = h(
      "button",
      {
        type: "button",
        class: "button small ghost",
        "data-action": "dismiss",
        "aria-label": `Remove ${name} from this list`,
        onclick: () => onDismiss(this),
      },
      "Dismiss",
    );
    this.link = h(
      "a",
      { class: "button small", "data-action": "download", download: name },
      "Download",
    );
    this.element = h(
      "li",
      { class: "item upload", "data-key": upload.key },
      h("div", { class: "item-head" }, h("span", { class: "name", title: name }, name), this.badge),
      this.progress.bar,
      h("div", { class: "meta" }, this.bytes, this.percent, this.rate, this.eta),
      this.detail,
      this.hash,
      h(
        "div",
        { class: "actions" },
        this.pauseButton,
        this.link,
        this.cancelButton,
        this.dismissButton,
      ),
    );
    this.render();
  }

  togglePause() {
    const u = this.upload;
    if (u.pauseRequested || u.state === State.FAILED) u.resume();
    else u.pause();
  }

  render() {
    const u = this.upload;
    const name = u.file.name;
    const done = u.doneBytes;
    this.element.dataset.state = u.state;
    this.element.dataset.hashedBytes = String(u.hashedBytes);
    this.badge.textContent = STATE_LABELS[u.state];
    setProgress(this.progress, done, u.size);
    this.bytes.textContent = `${formatBytes(done)} of ${formatBytes(u.size)}`;
    this.percent.textContent = formatPercent(done, u.size);
    const moving = u.state === State.UPLOADING || u.state === State.PAUSING;
    const rate = moving ? u.meter.rate : 0;
    // No rate: starting, stalled, or its chunks wait for a slot (the parallel setting is shared).
    this.rate.textContent = moving ? (rate > 0 ? formatRate(rate) : "waiting…") : "";
    const left = u.size - done;
    this.eta.textContent =
      moving && rate > 0
        ? left > 0
          ? `${formatDuration(left / rate)} left`
          : "waiting for the server"
        : "";
    this.detail.textContent = this.detailText();
    this.detail.hidden = !this.detail.textContent;
    this.hash.replaceChildren(...this.hashLine());
    this.hash.hidden = this.hash.childNodes.length === 0;

    // A permanent failure is finished too: no Retry (it could not help) and no Cancel.
    const finished = u.finished;
    this.element.toggleAttribute("data-permanent", u.permanent);
    const paused = u.pauseRequested && u.state !== State.CANCELLED;
    this.pauseButton.hidden = finished;
    this.pauseButton.disabled = u.state === State.FINISHING || u.state === State.PAUSING;
    const resumeLabel = u.state === State.FAILED ? "Retry" : "Resume";
    this.pauseButton.textContent = paused || u.state === State.FAILED ? resumeLabel : "Pause";
    this.pauseButton.setAttribute("aria-label", `${this.pauseButton.textContent} ${name}`);
    this.cancelButton.hidden = finished;
    this.dismissButton.hidden = !finished;
    this.link.hidden = u.state !== State.DONE || !u.result?.url;
    if (u.result?.url) this.link.href = u.result.url;
  }

  detailText() {
    const u = this.upload;
    if (u.state === State.DONE) {
      const seconds = u.sendingMs / 1000;
      let text = `${formatBytes(u.sentBytes)} sent`;
      if (seconds > 0.05)
        text += ` in ${formatDuration(seconds)} (${formatRate(u.sentBytes / seconds)})`;
      if (u.alreadyOnServer > 0)
        text += `; resumed, ${formatBytes(u.alreadyOnServer)} were already on the server`;
      return `${text}.`;
    }
    if (u.state === State.FAILED || u.state === State.RESUMING) return u.detail;
    if (u.state === State.STARTING && u.detail) return u.detail;
    if (u.resumed && u.state !== State.DONE) return "Resumed: only the missing chunks are sent.";
    if (u.restarted) return "The server no longer had the earlier upload, so it is sent again.";
    return u.detail;
  }

  hashLine() {
    const u = this.upload;
    const server = u.result?.sha256;
    if (u.permanent) return []; // hashing stopped with the upload
    if (u.hashError) return [`SHA-256 could not be computed here: ${u.hashError}`];
    if (u.verified === true) {
      return [h("span", { class: "ok" }, "✓ SHA-256 matches "), hashCode(server)];
    }
    if (u.verified === false) {
      return [
        h("span", { class: "bad" }, "✗ SHA-256 differs from the server's "),
        hashCode(server),
      ];
    }
    if (server) {
      const checking = u.settings.hash
        ? ` (checking here: ${formatPercent(u.hashedBytes, u.size)})`
        : "";
      return ["SHA-256 ", hashCode(server), checking];
    }
    if (u.settings.hash && u.state !== State.CANCELLED) {
      if (u.localSha256) return ["SHA-256 (computed here) ", hashCode(u.localSha256)];
      return [`SHA-256: computing here, ${formatPercent(u.hashedBytes, u.size)}`];
    }
    return [];
  }
}

export function hashCode(hex) {
  return h("code", { class: "sha", title: hex, "data-sha256": hex }, shortHash(hex));
}

/** The "Stored files" list. */
export function renderFiles(list, empty, files, onDelete) {
  list.replaceChildren(
    ...files.map((file) => {
      const created = file.created ? new Date(file.created * 1000).toLocaleString() : "";
      const remove = h(
        "button",
        { type: "button", class: "button small danger ghost", "aria-label": `Delete ${file.name}` },
        "Delete",
      );
      remove.addEventListener("click", () => confirmDelete(remove, () => onDelete(file)));
      return h(
        "li",
        { class: "item file", "data-file-id": file.id },
        h(
          "div",
          { class: "file-main" },
          h(
            "a",
            { class: "name", href: file.url, download: file.name || "", title: file.name },
            file.name || file.id,
          ),
          h(
            "span",
            { class: "meta" },
            [formatBytes(file.size), created].filter(Boolean).join(" · "),
          ),
          file.sha256 ? h("span", { class: "hash" }, "SHA-256 ", hashCode(file.sha256)) : null,
        ),
        h("div", { class: "actions" }, remove),
      );
    }),
  );
  empty.hidden = files.length > 0;
}

/** First click arms the button, a second click within four seconds confirms. */
function confirmDelete(button, action) {
  if (button.dataset.armed) {
    delete button.dataset.armed;
    button.disabled = true;
    action();
    return;
  }
  const label = button.textContent;
  button.dataset.armed = "1";
  button.textContent = "Confirm delete";
  setTimeout(() => {
    if (button.dataset.armed) {
      delete button.dataset.armed;
      button.textContent = label;
    }
  }, 4000);
}
