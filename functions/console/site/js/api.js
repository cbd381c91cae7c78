// The public API, called with the signed-in key. URLs are relative to the console's folder
// ("../v1/me"), so the console works at /console/ locally and under a stage prefix
// (/prod/console/) in AWS, always same-origin: no CORS, and no request leaves the deployment.

const KEY = "maas.console.key";
const API_ROOT = new URL("../", document.baseURI);

export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }

  /** The endpoint does not exist on this deployment (yet): shown as "not available". */
  get unavailable() {
    return this.status === 404 && (this.code === "unknown_route" || this.code === null);
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { sessionStorage.setItem(KEY, value); },
  clear() { sessionStorage.clear(); pending.clear(); },
};

// Idempotency keys of POSTs not yet known to have succeeded, by request: the same request
// sent again (the user clicks again after a timeout) reuses its key, so the API applies it
// once (never two credit grants); a changed request gets a new key.
const pending = new Map();

async function request(method, path, { body, key = session.key, query, idempotent = false, accept } = {}) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${key}` };
  if (accept) headers.Accept = accept;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const attempt = `${method} ${path} ${JSON.stringify(body)}`;
  if (idempotent) {
    if (!pending.has(attempt)) pending.set(attempt, crypto.randomUUID());
    headers["Idempotency-Key"] = pending.get(attempt);
  }
  let response;
  try {
    response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "The API could not be reached. Check the connection and try again.");
  }
  // Answered (success or a definite refusal): a new attempt is a new request.
  if (idempotent && response.status < 500 && response.status !== 429) pending.delete(attempt);
  return response;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let code = null;
  let param = null;
  try {
    const error = (await response.json()).error || {};
    message = error.message || message;
    code = error.code || null;
    param = error.param || null;
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message, code, param);
}

export async function call(method, path, options = {}) {
  const response = await request(method, path, options);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const get = (path, query, options = {}) => call("GET", path, { ...options, query });
export const post = (path, body, options = {}) => call("POST", path, { ...options, body });
export const patch = (path, body) => call("PATCH", path, { body });
export const del = (path) => call("DELETE", path);

/** Every page of a paginated list. */
export async function all(path, query = {}) {
  const items = [];
  let cursor;
  do {
    const page = await get(path, { ...query, cursor });
    items.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** The API's own bytes (e.g. its CSV) and the file name it proposes. */
export async function download(path, query) {
  const response = await request("GET", path, { query });
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (/filename="?([^";]+)"?/.exec(disposition) || [])[1] || "download.csv";
  return { blob: await response.blob(), name };
}
