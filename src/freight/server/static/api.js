// Talking to the freight API: JSON requests, typed errors, and the bearer token.
//
// The page itself loads without a token. When the API answers 401, `auth.renew()` asks the
// person for a token once (every request that hit the 401 waits for the same answer), keeps it
// in sessionStorage for this tab, and the request is sent again.

const TOKEN_KEY = "freight.token";

/**
 * Where the server is mounted: `/`, or a prefix such as `/sub/` behind a reverse proxy. The
 * modules live in `<root>/static/`, so it is the folder above this file, wherever the page is.
 */
export const ROOT = new URL("../", import.meta.url);

/** The absolute URL of a server path given from the mount point (`/api/files` or `api/files`). */
export function serverUrl(path) {
  return new URL(path.replace(/^\/+/, ""), ROOT).href;
}

export class ApiError extends Error {
  /** status 0 means the request never got an answer (network down, server gone, aborted). */
  constructor(status, code, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
    this.refused = false;
  }

  /**
   * Worth trying again later: no answer, a timeout, a chunk being written by another request
   * (423: a request from before a reload may still be running), too many requests, or a
   * server error.
   */
  get retryable() {
    if (this.refused) return false;
    return [0, 408, 423, 429].includes(this.status) || this.status >= 500;
  }

  /**
   * Trying again cannot help: a client error other than a conflict, a timeout, a lock, a
   * missing token or a damaged chunk (413 too large, 403 forbidden, 404 no such endpoint...).
   * A refusal made by the page itself before sending anything has status 0 and `refused`.
   */
  get permanent() {
    if (this.refused) return true;
    if (this.status < 400 || this.status >= 500) return false;
    return ![401, 408, 409, 422, 423, 429].includes(this.status);
  }

  /** The upload is gone on the server (never existed, expired or deleted). */
  get gone() {
    return this.status === 404 || this.status === 410;
  }
}

/** The page refuses a file before sending or hashing anything (too large, wrong file...). */
export function refusal(code, message) {
  const error = new ApiError(0, code, message);
  error.refused = true;
  return error;
}

export class AbortedError extends Error {
  constructor() {
    super("aborted");
    this.name = "AbortedError";
  }
}

/** Build an ApiError from a status and a response text in freight's `{code, message}` form. */
export function errorFrom(status, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const code = body?.code ?? `HTTP_${status}`;
  const message = body?.message ?? (text && text.length < 200 ? text : `HTTP ${status}`);
  return new ApiError(status, code, message, body);
}

class Auth extends EventTarget {
  constructor() {
    super();
    this.token = sessionStorage.getItem(TOKEN_KEY);
    this.pending = null;
    /** Set by the page: `async (rejected) => token or null`, shows the token dialog. */
    this.prompt = null;
    /** The person closed the dialog: background requests stop asking until they act. */
    this.declined = false;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /**
   * Called after a 401 for a request sent with `sentToken`. Resolves when a new token is in
   * place; rejects with the 401 error when the person gives up.
   */
  renew(sentToken, error, { background = false } = {}) {
    if (this.token !== sentToken) return Promise.resolve(); // someone already renewed it
    if (background && this.declined && !this.pending) return Promise.reject(error);
    if (!this.pending) {
      const rejected = sentToken !== null;
      this.pending = (async () => {
        const token = this.prompt ? await this.prompt(rejected) : null;
        this.declined = !token;
        if (!token) throw error;
        this.token = token;
        sessionStorage.setItem(TOKEN_KEY, token);
        this.dispatchEvent(new Event("change"));
      })().finally(() => {
        this.pending = null;
      });
    }
    return this.pending;
  }

  /** Resolves the next time a token is entered. */
  nextToken() {
    return new Promise((resolve) => this.addEventListener("change", resolve, { once: true }));
  }

  forget() {
    this.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

export const auth = new Auth();

/**
 * Send one request with the token, asking for a new token on 401. `send(headers)` performs
 * the request and resolves to `{status, text, ...}` or throws an ApiError with status 0.
 */
export async function withAuth(send) {
  for (;;) {
    const token = auth.token;
    const reply = await send(auth.headers());
    if (reply.status !== 401) return reply;
    await auth.renew(token, errorFrom(401, reply.text));
  }
}

/** A JSON API call. Resolves to the parsed body (null for 204); throws ApiError otherwise. */
export async function api(method, path, { json, signal } = {}) {
  const reply = await withAuth(async (authHeaders) => {
    const headers = { Accept: "application/json", ...authHeaders };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(serverUrl(path), {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
        signal,
        cache: "no-store",
      });
    } catch (error) {
      if (signal?.aborted) throw new AbortedError();
      throw new ApiError(0, "NETWORK", `network error: ${error.message}`);
    }
    return { status: response.status, text: await response.text() };
  });
  if (reply.status >= 200 && reply.status < 300) {
    return reply.text ? JSON.parse(reply.text) : null;
  }
  throw errorFrom(reply.status, reply.text);
}

/** Every entry of a paged listing (`/api/files`, `/api/uploads`): follows `next_cursor`. */
export async function listAll(path, key) {
  const entries = [];
  let cursor = null;
  do {
    const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api("GET", `${path}${query}`);
    entries.push(...page[key]);
    cursor = page[key].length ? page.next_cursor : null;
  } while (cursor);
  return entries;
}
