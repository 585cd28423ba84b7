// Overall progress of this tab's uploads, with "Pause all" and "Resume all".
//
// Counts every upload that is still going or finished in this visit; cancelled ones and
// those refused or failed for good are left out, since their bytes will never arrive.

import { State } from "./uploader.js";
import { formatBytes, formatDuration, formatPercent, formatRate } from "./util.js";
import { h, progressBar, setProgress } from "./views.js";

const MOVING = new Set([State.UPLOADING, State.PAUSING]);

export class OverallProgress {
  /** `uploads()` returns this tab's Upload objects. */
  constructor(container, uploads) {
    this.uploads = uploads;
    this.progress = progressBar("Overall upload progress");
    this.text = h("span", { class: "overall-text" });
    this.pauseAll = h(
      "button",
      { type: "button", class: "button small", "data-action": "pause-all" },
      "Pause all",
    );
    this.resumeAll = h(
      "button",
      { type: "button", class: "button small", "data-action": "resume-all" },
      "Resume all",
    );
    this.pauseAll.addEventListener("click", () => {
      for (const upload of this.uploads()) upload.pause();
    });
    this.resumeAll.addEventListener("click", () => {
      // Paused ones and those waiting for Retry after a passing failure; never a refusal.
      for (const upload of this.uploads()) if (!upload.finished) upload.resume();
    });
    this.element = container;
    container.replaceChildren(
      this.progress.bar,
      h("div", { class: "overall-line" }, this.text, this.pauseAll, this.resumeAll),
    );
    this.render();
  }

  render() {
    const counted = this.uploads().filter(
      (u) => u.state !== State.CANCELLED && !(u.state === State.FAILED && u.permanent),
    );
    let size = 0;
    let done = 0;
    let rate = 0;
    let going = 0;
    let paused = 0;
    for (const u of counted) {
      size += u.size;
      done += u.doneBytes;
      if (MOVING.has(u.state)) rate += u.meter.rate;
      if (u.pauseRequested && u.state !== State.FAILED) paused++;
      else if (!u.finished) going++;
    }
    this.element.hidden = counted.length < 1;
    setProgress(this.progress, done, size);
    const parts = [`${formatBytes(done)} of ${formatBytes(size)}`, formatPercent(done, size)];
    if (going > 0) {
      parts.push(rate > 0 ? formatRate(rate) : "waiting…");
      if (rate > 0 && size > done) parts.push(`${formatDuration((size - done) / rate)} left`);
    }
    const count = (n, word) => `${n} ${word}`;
    parts.push(count(counted.length, counted.length === 1 ? "upload" : "uploads"));
    if (paused > 0) parts.push(count(paused, "paused"));
    this.text.textContent = parts.join(" · ");
    this.element.dataset.rate = String(Math.round(rate));
    this.pauseAll.disabled = going === 0;
    this.resumeAll.disabled = !counted.some(
      (u) => !u.finished && (u.pauseRequested || u.state === State.FAILED),
    );
  }
}
