// What the storefront and the dashboard share: the API client (tokens,
// anonymous session, RFC 9457 problems), the live websocket client, and a
// few DOM helpers. Only the public API and /ws are used.

const AUTH_KEY = "shopstream.auth";
const SESSION_KEY = "shopstream.session";

/** The signed-in user's tokens and profile, kept in localStorage. */
export const auth = {
  get() {
    try {
      return JSON.parse(localStorage.getItem(AUTH_KEY)) || null;
    } catch {
      return null;
    }
  },
  set(v) {
    if (v) localStorage.setItem(AUTH_KEY, JSON.stringify(v));
    else localStorage.removeItem(AUTH_KEY);
    window.dispatchEvent(new Event("shopstream:auth"));
  },
  user() {
    return this.get()?.user || null;
  },
  token() {
    return this.get()?.access_token || null;
  },
};

/** The anonymous session the API issued (X-Session-Id), if any. */
export const session = {
  get: () => localStorage.getItem(SESSION_KEY),
  set: (s) => (s ? localStorage.setItem(SESSION_KEY, s) : localStorage.removeItem(SESSION_KEY)),
};

/** A failed call: `problem` is the RFC 9457 body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

let refreshing = null;

async function refresh() {
  const a = auth.get();
  if (!a?.refresh_token) return false;
  refreshing ||= fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: a.refresh_token }),
  })
    .then(async (r) => {
      if (!r.ok) {
        auth.set(null);
        return false;
      }
      const t = await r.json();
      auth.set({ ...auth.get(), ...t });
      return true;
    })
    .finally(() => (refreshing = null));
  return refreshing;
}

/**
 * Calls the API. `body` is sent as JSON unless it is a Blob/File (sent
 * raw). Resolves to the parsed body; rejects with an ApiError.
 */
export async function api(method, path, body, extra = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { accept: "application/json", ...extra };
    const token = auth.token();
    if (token) headers.authorization = `Bearer ${token}`;
    const s = session.get();
    if (s) headers["x-session-id"] = s;
    let payload;
    if (body instanceof Blob) {
      payload = body;
      headers["content-type"] = body.type || "application/octet-stream";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["content-type"] = "application/json";
    }
    const r = await fetch(path, { method, headers, body: payload });
    const issued = r.headers.get("x-session-id");
    if (issued) session.set(issued);
    if (r.status === 401 && token && attempt === 0 && (await refresh())) continue;
    const text = await r.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { detail: text };
      }
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }
}

/** Signs in (or registers) and keeps the tokens and the profile. */
export async function signIn(email, password, register = null) {
  const t = register
    ? await api("POST", "/api/auth/register", { email, password, name: register })
    : await api("POST", "/api/auth/login", { email, password });
  auth.set({ ...t, user: null });
  const me = await api("GET", "/api/me");
  auth.set({ ...auth.get(), user: me });
  // The anonymous session was folded into the user's on sign-in.
  session.set(null);
  return me;
}

/**
 * Finishes a sign-in through the external issuer (Cognito): the server sent
 * the browser back with `#oidc=<one-time refresh token>` or
 * `#oidc-error=<reason>`. The fragment leaves the address bar and history
 * at once; the token is exchanged for the service's own. Resolves to
 * `null` (nothing to finish), `{ user }` or `{ error }`.
 */
export async function finishExternalSignIn() {
  const hash = location.hash.slice(1);
  if (!hash.startsWith("oidc=") && !hash.startsWith("oidc-error=")) return null;
  history.replaceState(null, "", location.pathname + location.search);
  const p = new URLSearchParams(hash);
  if (p.has("oidc-error")) return { error: p.get("oidc-error") };
  auth.set({ refresh_token: p.get("oidc"), user: null, external: true });
  if (!(await refresh())) return { error: "The sign-in could not be finished; try again." };
  try {
    const me = await api("GET", "/api/me");
    auth.set({ ...auth.get(), user: me });
    session.set(null);
    return { user: me };
  } catch (err) {
    auth.set(null);
    return { error: err.message };
  }
}

/**
 * A link to sign in through the external issuer, back to `page`
 * ("storefront" or "dashboard"), if the server has one configured.
 */
export async function externalSignInLink(page) {
  const info = await api("GET", "/api/auth/oidc").catch(() => null);
  if (!info?.enabled) return null;
  return h("a", { class: "button", id: "external-sign-in", href: `${info.login_url}?page=${page}` }, "Sign in with your organisation account");
}

/**
 * Forgets the tokens. A sign-in through the external issuer also ends the
 * browser's session there (or the next "sign in" would not ask for the
 * password), coming back to `page`: then it returns true, as the browser is
 * leaving.
 */
export function signOut(page = null) {
  const external = auth.get()?.external;
  auth.set(null);
  if (external && page) {
    location.assign(`/api/auth/oidc/logout?page=${page}`);
    return true;
  }
  return false;
}

/**
 * Creates an element: h("a", {href: "#/", class: "x", onclick: f}, "text", child).
 * Strings are text nodes (never HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function money(amount, currency) {
  const n = Number(amount);
  if (!currency) return String(amount);
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(n);
  } catch {
    return `${amount} ${currency}`;
  }
}

export function when(iso) {
  if (!iso) return "";
  const d = typeof iso === "number" ? new Date(iso) : new Date(iso);
  return d.toLocaleString();
}

/**
 * Shows a problem on a form: each `errors[].field` next to the input of that
 * name (aria-invalid, a message below it), the rest at the top.
 */
export function showProblem(form, err) {
  clearProblem(form);
  const p = err instanceof ApiError ? err.problem : { detail: String(err) };
  const general = [];
  for (const e of p.errors || []) {
    const input = form.querySelector(`[name="${CSS.escape(e.field)}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const msg = h("p", { class: "field-error", id: `err-${form.id}-${e.field}`, role: "alert" }, e.message);
      input.setAttribute("aria-describedby", msg.id);
      const holder = input.closest("label, .field");
      if (holder) holder.append(msg);
      else input.after(msg);
    } else {
      general.push(e.field ? `${e.field}: ${e.message}` : e.message);
    }
  }
  if (!p.errors?.length || general.length) {
    const text = general.length ? general.join("; ") : p.detail || p.title || "Something went wrong";
    form.prepend(h("p", { class: "form-error", role: "alert" }, text));
  }
}

export function clearProblem(form) {
  form.querySelectorAll(".field-error, .form-error").forEach((e) => e.remove());
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
}

/** A short-lived message at the bottom of the screen. */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = h("div", { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), 5000);
}

/**
 * The live connection to /ws: authenticates with the current token,
 * resubscribes after a reconnect or a gap in a topic's sequence numbers, and
 * hands each snapshot and change to the topic's handler.
 */
export class Live {
  constructor(onState = () => {}) {
    this.handlers = new Map();
    this.seq = new Map();
    this.onState = onState;
    this.backoff = 500;
    this.connect();
    window.addEventListener("shopstream:auth", () => this.reconnect());
  }

  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // The token goes in the first message, never in the URL.
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.onState("live");
      const token = auth.token();
      if (token) this.send({ op: "auth", token });
      for (const t of this.handlers.keys()) this.send({ op: "subscribe", topic: t });
    };
    ws.onmessage = (m) => this.message(JSON.parse(m.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.onState("offline");
      setTimeout(() => this.ws === ws && this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  reconnect() {
    const old = this.ws;
    this.ws = null;
    old?.close();
    this.connect();
  }

  send(m) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  subscribe(topic, handler) {
    this.handlers.set(topic, handler);
    this.seq.delete(topic);
    this.send({ op: "subscribe", topic });
  }

  unsubscribe(topic) {
    if (this.handlers.delete(topic)) this.send({ op: "unsubscribe", topic });
  }

  message(m) {
    if (!m.topic) return;
    const handler = this.handlers.get(m.topic);
    if (!handler) return;
    if (m.type === "snapshot") {
      this.seq.set(m.topic, 0);
    } else if (m.type === "change") {
      const last = this.seq.get(m.topic);
      if (last !== undefined && m.seq !== last + 1) {
        // A gap: we missed something. Start again from a snapshot.
        this.subscribe(m.topic, handler);
        return;
      }
      this.seq.set(m.topic, m.seq);
    }
    handler(m);
  }
}
