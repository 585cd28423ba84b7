// Sign-in with a user's token, and that user's usage against quota, in the top bar.
//
// A server with users answers 401 until a token is given; the page's token dialog (api.js)
// asks for it, and every list then shows only that user's files (the server filters them).
// This module shows who is signed in ("alice · 1.2 GiB of 500 GiB · 3 of 100 files", from
// GET /api/me), a "Sign out" button that forgets the tab's token, and a "Sign in" button
// on a server that is open (no token needed) so a user can still act as themselves.

import { ApiError, api, auth } from "./api.js";
import { formatBytes } from "./util.js";
import { h } from "./views.js";

const REFRESH_MS = 15000;

function usageText(me) {
  const used = me.usage ?? { bytes: 0, files: 0 };
  const quota = me.quota ?? {};
  let space = formatBytes(used.bytes);
  if (quota.bytes !== null && quota.bytes !== undefined) space += ` of ${formatBytes(quota.bytes)}`;
  let files = `${used.files}`;
  if (quota.files !== null && quota.files !== undefined) files += ` of ${quota.files}`;
  return `${space} · ${files} files`;
}

async function signIn() {
  try {
    await auth.renew(auth.token, new ApiError(401, "ERR_UNAUTHORIZED", "sign-in cancelled"));
  } catch {
    // the person closed the dialog: stay as before
  }
}

function signOut() {
  auth.forget();
  location.reload(); // every list and stream starts again without the token
}

function render(box, me) {
  const parts = [];
  if (me?.user) {
    const role = me.read_only ? " (read-only)" : me.admin ? " (admin)" : "";
    parts.push(h("span", { class: "account-user", "data-user": me.user }, me.user + role));
    parts.push(h("span", { class: "account-usage" }, usageText(me)));
  } else if (me && auth.token) {
    parts.push(h("span", { class: "account-user", "data-user": "" }, "Admin"));
  }
  const signedIn = Boolean(auth.token);
  parts.push(
    h(
      "button",
      {
        type: "button",
        id: signedIn ? "sign-out" : "sign-in",
        class: "button ghost small",
        onclick: signedIn ? signOut : signIn,
      },
      signedIn ? "Sign out" : "Sign in",
    ),
  );
  box.replaceChildren(...parts);
}

async function refresh(box) {
  try {
    render(box, await api("GET", "/api/me"));
  } catch (error) {
    if (error.status === 404) box.hidden = true; // a server without users
    else render(box, null);
  }
}

export function setUpSignIn() {
  const box = h("p", {
    id: "account",
    class: "connection account",
    role: "status",
    style: "gap: 0.6rem; flex-wrap: wrap; justify-content: flex-end",
  });
  const bar = document.querySelector(".topbar");
  bar?.insertBefore(box, document.getElementById("connection"));
  auth.addEventListener("change", () => refresh(box));
  document.getElementById("refresh-files")?.addEventListener("click", () => refresh(box));
  setInterval(() => refresh(box), REFRESH_MS);
  refresh(box);
}

setUpSignIn();
