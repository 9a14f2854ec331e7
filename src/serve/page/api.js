// The JSON API client: same-origin requests with the bearer token, and the token form.
//
// When the server has a token every /api route answers 401 without it. The first 401
// shows #token-form; every request that got a 401 waits for the one token the user saves
// there (kept in sessionStorage for this tab) and is retried with it.

const TOKEN_KEY = "cerebros-bridge.token";

/** An API error: the HTTP status and the body's `error` object ({class, message, key?}). */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.error = error ?? {};
  }
}

/** The saved token, or null. */
function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Request headers with the Authorization header when a token is saved. */
export function authHeaders(extra = {}) {
  const saved = token();
  return saved ? { ...extra, Authorization: `Bearer ${saved}` } : { ...extra };
}

let tokenWaiters = null;

/**
 * Called after a 401: shows the token form (once for all concurrent callers) and resolves
 * when the user saves a token.
 */
export function waitForToken() {
  if (!tokenWaiters) {
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const hint = document.getElementById("token-hint");
    hint.textContent = token()
      ? "The server refused the saved token. Enter the right one."
      : "This server needs an access token (serve.token).";
    form.hidden = false;
    input.value = "";
    input.focus();
    tokenWaiters = new Promise((resolve) => {
      form.addEventListener(
        "submit",
        (event) => {
          event.preventDefault();
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
          form.hidden = true;
          tokenWaiters = null;
          resolve();
        },
        { once: true },
      );
    });
  }
  return tokenWaiters;
}

/**
 * Fetches `path` with the token; on 401 waits for a token and retries. Resolves to the
 * parsed JSON body of a 2xx answer, rejects with ApiError otherwise.
 */
export async function api(path, { method = "GET", body, contentType, signal } = {}) {
  for (;;) {
    const headers = authHeaders({ Accept: "application/json" });
    if (contentType) headers["Content-Type"] = contentType;
    const response = await fetch(path, { method, body, headers, signal });
    if (response.status === 401) {
      await waitForToken();
      continue;
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // A body that is not JSON (a proxy's error page): reported by status below.
    }
    if (!response.ok) throw new ApiError(response.status, json?.error);
    return json;
  }
}

/** The path of a run (ids are user-controlled: always encoded). */
export function runPath(runId, ...rest) {
  return ["/api/runs", runId, ...rest].map((p, i) => (i ? encodeURIComponent(p) : p)).join("/");
}
