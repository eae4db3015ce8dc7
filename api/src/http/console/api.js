// The console's REST calls and its signed-in session.
//
// `session` holds the tokens of `POST /api/auth/login` (in sessionStorage, or localStorage when
// the user asked to stay signed in), refreshes them with `POST /api/auth/refresh` before the
// access token expires and after a 401, and signs out (event `signout` with the reason) when
// the node refuses the refresh token. `api()` sends a call with the current access token and
// throws an `ApiError` carrying the node's JSON error (`{"error":{"code","message"}}`).

import { decodeJwt } from './client.js';

const KEY = 'ovasabi.console.session';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** One HTTP call; the JSON answer, or an ApiError with the node's message. */
export async function send(method, path, body, token) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `cannot reach the node (${e.message})`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: said below
  }
  if (!res.ok) {
    const err = json && json.error;
    throw new ApiError(res.status, err?.code || `http_${res.status}`, err?.message || `${res.status} ${res.statusText || 'error'}`);
  }
  return json;
}

class Session extends EventTarget {
  constructor() {
    super();
    /** `{access, refresh, issuedAt, expiresAt, user, persist}` (times in local ms) or null. */
    this.data = null;
    this._refreshing = null;
    this._timer = 0;
  }

  /** Reads a stored session (this tab's first, then the device's). */
  load() {
    for (const store of [sessionStorage, localStorage]) {
      try {
        const d = JSON.parse(store.getItem(KEY) || 'null');
        if (d?.access) {
          this.data = { ...d, persist: store === localStorage };
          break;
        }
      } catch {
        store.removeItem(KEY);
      }
    }
    if (this.data && !this.data.refresh && Date.now() >= this.data.expiresAt) this._clear();
    this._schedule();
    // Another tab that shares the device's session refreshed it or signed out.
    addEventListener('storage', (e) => {
      if (e.key !== KEY || e.storageArea !== localStorage || !this.data?.persist) return;
      const d = e.newValue && JSON.parse(e.newValue);
      if (!d) return this.signOut('Signed out in another tab.');
      this.data = { ...d, persist: true };
      this._schedule();
      this._emit('refresh');
    });
  }

  get signedIn() {
    return !!this.data;
  }

  get user() {
    return this.data?.user || null;
  }

  hasRole(role) {
    return !!this.data?.user?.roles?.includes(role);
  }

  /** Signs in with a user name (or email) and password; throws the node's error. */
  async signIn(login, password, persist) {
    const t = await send('POST', '/api/auth/login', { login, password });
    this._set(t, persist);
    this._emit('signin');
  }

  /** Takes an access token from a link (`--dev` prints one), with its refresh token if given. */
  async adopt(access, refresh) {
    const user = await send('GET', '/api/users/me', undefined, access);
    const exp = decodeJwt(access)?.exp;
    const now = Date.now();
    this.data = { access, refresh: refresh || null, issuedAt: now, expiresAt: exp ? exp * 1000 : now + 15 * 60e3, user, persist: false };
    this._save();
    this._schedule();
    this._emit('signin');
  }

  /** Updates the signed-in user (e.g. after `GET /api/users/me`). */
  setUser(user) {
    if (!this.data) return;
    this.data.user = user;
    this._save();
    this._emit('refresh');
  }

  signOut(reason = '') {
    if (!this.data) return;
    this._clear();
    this._emit('signout', reason);
  }

  /** An access token to call with: refreshed first when it is due (or `fresh` is asked for). */
  async token({ fresh = false } = {}) {
    const d = this.data;
    if (!d) throw new ApiError(401, 'unauthenticated', 'not signed in');
    const now = Date.now();
    const ttl = Math.max(1000, d.expiresAt - d.issuedAt);
    const due = now >= d.expiresAt - Math.min(60e3, ttl * 0.4);
    const young = now - d.issuedAt < Math.min(2000, ttl * 0.3);
    if (d.refresh && (due || (fresh && !young))) return this.refresh();
    if (now >= d.expiresAt) {
      this.signOut('Your sign-in expired: sign in again.');
      throw new ApiError(401, 'unauthenticated', 'your sign-in expired');
    }
    return d.access;
  }

  /** New tokens from the refresh token (one call at a time); signs out when it is refused. */
  refresh() {
    this._refreshing ||= this._refresh().finally(() => (this._refreshing = null));
    return this._refreshing;
  }

  async _refresh() {
    const d = this.data;
    if (!d?.refresh) {
      this.signOut('Your sign-in expired: sign in again.');
      throw new ApiError(401, 'unauthenticated', 'your sign-in expired');
    }
    let t;
    try {
      t = await send('POST', '/api/auth/refresh', { refresh_token: d.refresh });
    } catch (e) {
      if (e.status === 401 || e.status === 403) this.signOut(`Signed out: ${e.message}`);
      else this._schedule(5000);
      throw e;
    }
    if (this.data !== d) throw new ApiError(401, 'unauthenticated', 'signed out meanwhile');
    this._set(t, d.persist);
    this._emit('refresh');
    return t.access_token;
  }

  _set(t, persist) {
    const now = Date.now();
    this.data = {
      access: t.access_token,
      refresh: t.refresh_token,
      issuedAt: now,
      expiresAt: now + t.expires_in * 1000,
      user: t.user,
      persist: !!persist,
    };
    this._save();
    this._schedule();
  }

  _save() {
    const { persist, ...d } = this.data;
    (persist ? localStorage : sessionStorage).setItem(KEY, JSON.stringify(d));
    (persist ? sessionStorage : localStorage).removeItem(KEY);
  }

  _clear() {
    const persist = this.data?.persist;
    this.data = null;
    clearTimeout(this._timer);
    sessionStorage.removeItem(KEY);
    if (persist) localStorage.removeItem(KEY);
  }

  /** Refreshes ahead of expiry (or, without a refresh token, signs out at expiry). */
  _schedule(ms) {
    clearTimeout(this._timer);
    const d = this.data;
    if (!d) return;
    const left = d.expiresAt - Date.now();
    if (!d.refresh) {
      this._timer = setTimeout(() => this.signOut('The sign-in link’s token expired: sign in again.'), Math.max(0, left));
      return;
    }
    const ttl = Math.max(1000, d.expiresAt - d.issuedAt);
    const at = ms ?? Math.max(500, left - Math.min(60e3, ttl * 0.4));
    this._timer = setTimeout(() => this.refresh().catch(() => {}), at);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export const session = new Session();

/** A call with the session's token; after a 401, one refresh and one retry. */
export async function api(method, path, body) {
  let token = await session.token();
  try {
    return await send(method, path, body, token);
  } catch (e) {
    if (e.status !== 401 || !session.signedIn) throw e;
    if (!session.data.refresh) {
      session.signOut(`Signed out: ${e.message}`);
      throw e;
    }
    token = await session.refresh();
    try {
      return await send(method, path, body, token);
    } catch (e2) {
      if (e2.status === 401) session.signOut(`Signed out: ${e2.message}`);
      throw e2;
    }
  }
}

/** Path segment. */
export const seg = encodeURIComponent;
