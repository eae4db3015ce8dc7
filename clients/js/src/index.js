/**
 * @ovasabi/client: the official JavaScript client of the OVASABI broadcast engine.
 *
 * What this module owns: one `Subscription` is one user's live stream of one campaign, kept
 * alive across disconnects (wire protocol: docs/protocol.md of the engine). It owns
 *  - the socket URL (`/ws/{campaign}?since&epoch&compress` and an `auth` first frame, or
 *    `/ws/{campaign}/{user}?token=...` to watch as another user; http→ws, https→wss);
 *  - the socket's life: close-code policy (stop, reconnect, new token), jittered exponential
 *    back-off, dead-connection detection (application pings when silent, then a reconnect);
 *  - delivery: every event once and in `seq` order across reconnects (resume with `since` and
 *    `epoch`, drop what was already delivered, reconnect to fill a `seq` gap) and a resync from
 *    the full state when the node answers `recovered: false`;
 *  - tokens: `getToken()` on 4401 and before the token's `exp`, handed to the open session as a
 *    `refresh` frame (or, for a node that does not know that frame, by reconnecting);
 *  - inflating compressed tick frames (`compress=deflate`, `DecompressionStream`), in order.
 * It does not own signing in or calling `/api/auth/refresh` (the caller's `getToken` does),
 * merging states (a tick's `state` replaces the previous one) or retrying `publish()`.
 * No dependencies: browsers, and Node 20+ with a WebSocket class passed in (the `ws` package).
 */

/** Close codes after which the subscription stops for good (1000: the campaign ended). */
const STOP = { 1000: 'campaign ended', 4400: 'bad request', 4403: 'forbidden', 4404: 'not found' };
/** HTTP answers to a refused upgrade, as the close codes a node sends after accepting it. */
const HTTP_CLOSE = { 400: 4400, 401: 4401, 403: 4403, 404: 4404 };
const OPEN = 1;

/** The payload of a JWT (base64url JSON), not verified; `null` if it is not one. */
export function decodeJwt(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

/**
 * Full-jitter exponential back-off: a delay in [0, min(maxDelay, initialDelay · 2^attempt)).
 * `attempt` counts the failed tries since the last connection that stayed up `resetAfter`.
 */
export function backoffDelay(attempt, { initialDelay = 500, maxDelay = 30000 } = {}, random = Math.random) {
  return Math.floor(random() * Math.min(maxDelay, initialDelay * 2 ** Math.min(attempt, 40)));
}

/**
 * The WebSocket URL of a campaign stream from the node's base URL (`http(s)://` or `ws(s)://`,
 * with an optional path prefix). `query` values that are `null`/`undefined` are left out.
 */
export function streamUrl(base, campaign, user, query = {}) {
  const u = new URL(base, globalThis.location?.href);
  u.protocol = u.protocol.replace(/^http/, 'ws');
  const seg = [campaign, user].filter((s) => s != null && s !== '').map(encodeURIComponent);
  u.pathname = u.pathname.replace(/\/+$/, '') + '/ws/' + seg.join('/');
  u.search = u.hash = '';
  for (const [k, v] of Object.entries(query)) if (v != null) u.searchParams.set(k, String(v));
  return u.href;
}

/** Inflates a raw-deflate binary frame (ArrayBuffer, typed array or Blob) to its text. */
async function inflate(data) {
  const blob = data instanceof Blob ? data : new Blob([data]);
  return new Response(blob.stream().pipeThrough(new DecompressionStream('deflate-raw'))).text();
}

/** `target` with the JSON merge patch (RFC 7396) `patch` applied, as a new value. */
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Opens a campaign's live stream; see index.d.ts for the options and events. */
export function connect(url, campaign, options = {}) {
  return new Subscription(url, campaign, options);
}

export class Subscription {
  constructor(url, campaign, o = {}) {
    const WS = o.WebSocket || globalThis.WebSocket;
    if (!WS) throw new TypeError('no WebSocket here: pass one, e.g. connect(url, c, { WebSocket: (await import("ws")).WebSocket })');
    this._o = o;
    this._WS = WS;
    this._url = url;
    // Injectable for tests; wrapped so that browsers' timers keep their `this`.
    this._t = o.timers || { setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t), now: Date.now };
    this._rand = o.random || Math.random;
    this._bo = o.backoff || {};
    this._idle = o.idleTimeout ?? 75000;
    this._token = o.token;
    this._authTries = 0;
    this._ls = {};
    this._gen = 0; // bumped for every socket: frames of an older one are ignored
    this._attempt = 0;
    this._chain = Promise.resolve();
    /** The campaign as given (id or slug). */
    this.campaign = campaign;
    /** The last state a tick carried (`undefined` before the first). */
    this.state = undefined;
    /** The last event `seq` delivered (or the welcome's, after a resync). */
    this.seq = o.since ?? null;
    /** The epoch of the last welcome. */
    this.epoch = o.epoch ?? null;
    this.status = 'connecting';
    this.frequency = null;
    this.connections = undefined;
    this.welcome = null;
    queueMicrotask(() => {
      if (this.status === 'stopped') return;
      this._status('connecting');
      this._open();
    });
  }

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    (this._ls[type] ||= new Set()).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._ls[type]?.delete(fn);
  }

  /** Sends a client event; `false` (not sent) when the socket is not open. */
  publish(name, data) {
    return this._send({ type: 'event', name, data });
  }

  /** Closes the stream for good (status `stopped`, reason `closed`). */
  close() {
    this._stop(1000, 'closed');
  }

  _emit(type, ...args) {
    for (const fn of this._ls[type] || []) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  _status(status, detail) {
    this.status = status;
    this._emit('status', { status, ...detail });
  }

  _send(frame) {
    if (this._ws?.readyState !== OPEN) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _later(name, fn, ms) {
    this._t.clearTimeout(this[name]);
    this[name] = ms == null ? undefined : this._t.setTimeout(fn, Math.max(0, ms));
  }

  /** The token to connect with: a new one from `getToken` when there is none or it expires. */
  async _tokenNow() {
    const exp = this._token && decodeJwt(this._token)?.exp;
    if (this._o.getToken && (!this._token || (exp && exp * 1000 - this._t.now() < 5000))) {
      this._token = await this._o.getToken();
    }
    return this._token;
  }

  async _open() {
    if (this.status === 'stopped') return;
    const gen = ++this._gen;
    let token;
    try {
      token = await this._tokenNow();
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit('error', { type: 'error', code: 'get_token_failed', message: String(e?.message || e) });
      return this._retry(0, 'getToken failed');
    }
    if (gen !== this._gen || this.status === 'stopped') return;
    const sub = token && decodeJwt(token)?.sub;
    // The token goes in the first frame (out of proxies' logs) on /ws/{campaign}, unless the
    // session watches as another user than the token's (or `tokenIn: 'query'`).
    const inFrame = token && this._o.tokenIn !== 'query' && (this._o.user == null || this._o.user === sub);
    const user = inFrame ? null : (this._o.user ?? sub);
    let ws;
    try {
      const url = streamUrl(this._url, this.campaign, user, {
        compress: this._o.compress ? 'deflate' : null,
        delta: this._o.delta ? 1 : null,
        since: this.seq,
        epoch: this.seq != null ? this.epoch : null,
        token: inFrame ? null : token,
      });
      ws = this._ws = new this._WS(url);
    } catch (e) {
      return this._stop(4400, String(e?.message || e));
    }
    ws.binaryType = 'arraybuffer';
    if (inFrame) ws.onopen = () => gen === this._gen && this._send({ type: 'auth', token });
    this._welcomed = this._refreshSent = false;
    this._rx = this._t.now();
    this._watch(gen);
    let http;
    ws.onmessage = (ev) => {
      if (gen !== this._gen) return;
      this._rx = this._t.now();
      const data = ev.data;
      this._seq(gen, async () => this._frame(JSON.parse(typeof data === 'string' ? data : await inflate(data))));
    };
    // Node's `ws` reports an upgrade refused with an HTTP status as an error, then 1006.
    ws.onerror = (ev) => {
      const m = /server response: (\d+)/.exec(ev?.message || ev?.error?.message || '');
      if (m) http = HTTP_CLOSE[m[1]];
    };
    ws.onclose = (ev) => {
      if (gen === this._gen) this._seq(gen, () => this._closed(http || ev.code, ev.reason || ''));
    };
  }

  /** Runs `fn` after every frame received before it, if `gen` is still the current socket. */
  _seq(gen, fn) {
    this._chain = this._chain
      .then(() => gen === this._gen && fn())
      .catch((e) => this._emit('error', { type: 'error', code: 'bad_frame', message: String(e?.message || e) }));
  }

  /** Dead-connection watch: a ping after idleTimeout/2 of silence, a reconnect after idleTimeout. */
  _watch(gen) {
    const half = this._idle / 2;
    const check = () => {
      if (gen !== this._gen) return;
      const quiet = this._t.now() - this._rx;
      if (quiet >= this._idle) return this._drop('idle', 0);
      if (quiet >= half) this._send({ type: 'ping' });
      this._later('_idleT', check, (quiet >= half ? this._idle : half) - quiet);
    };
    this._later('_idleT', check, half);
  }

  _frame(f) {
    switch (f.type) {
      case 'welcome':
        return this._welcome(f);
      case 'tick':
        return this._tick(f);
      case 'config':
        this.frequency = f.frequency_hz;
        return;
      case 'message':
      case 'notification':
        return this._emit(f.type, f);
      case 'refreshed':
        this._refreshSent = false;
        return;
      case 'error':
        if (this._refreshSent) {
          // Only a `refresh` frame can be of an unknown type: a node without it wants a
          // reconnect. A token it refused: ask again (the session keeps the old one until exp).
          if (f.code === 'unknown_type') {
            this._noRefresh = true;
            this._drop('token refresh', 0, true);
          } else if (f.code === 'unauthenticated' || f.code === 'forbidden') {
            this._refreshSent = false;
            this._later('_tokT', () => this._refresh(), 5000);
          }
        }
        return this._emit('error', f);
    }
  }

  _welcome(f) {
    this.welcome = f;
    this._welcomed = this._t.now();
    this._authTries = 0;
    this.epoch = f.epoch ?? null;
    this.frequency = f.frequency_hz;
    this._synced = false;
    if (f.recovered !== true) {
      // A fresh start or a refused resume: count from the welcome's seq (the next tick's
      // events follow it), even if that is below ours (a node that started over).
      const resync = this.seq != null;
      this.seq = f.seq;
      if (resync) this._status('resyncing', { reason: 'history not recovered' });
    }
    this._schedRefresh();
  }

  _tick(f) {
    const gen = this._gen; // a listener may close the subscription
    for (const e of f.events || []) {
      if (gen !== this._gen) return;
      if (e.seq <= this.seq) continue;
      if (this.seq != null && e.seq !== this.seq + 1) return this._gap(e.seq);
      this.seq = e.seq;
      this._emit('event', e);
    }
    if (gen !== this._gen) return;
    if (f.seq > this.seq) return this._gap(f.seq);
    if (f.connections !== undefined) this.connections = f.connections;
    let state = f.state;
    if ('state_patch' in f) {
      // Only on top of the state version before it; otherwise the whole state again.
      if (this._stateV == null || f.state_version !== this._stateV + 1) {
        this._emit('error', { type: 'error', code: 'state_gap', message: `state ${this._stateV} then a patch to ${f.state_version}: resuming` });
        return this._drop('state gap', 0, true);
      }
      state = mergePatch(this.state, f.state_patch);
    }
    if (state !== undefined) {
      this._stateV = f.state_version ?? null;
      this.state = state;
      this._emit('state', state);
      if (!this._synced) {
        this._synced = true;
        this._status('live');
      }
    }
  }

  /** Events between `this.seq` and `seq` were lost: reconnect with `since` to get them. */
  _gap(seq) {
    this._emit('error', { type: 'error', code: 'gap', message: `seq ${this.seq} then ${seq}: resuming` });
    this._drop('gap', 0);
  }

  /** Closes the current socket (its frames are ignored from now on) and reconnects. */
  _drop(reason, extra, now) {
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    try {
      ws?.close(1000, reason);
    } catch {}
    if (now) {
      this._status('connecting', { reason, delay: 0 });
      this._later('_retryT', () => this._open(), 0);
    } else this._retry(extra, reason);
  }

  _closed(code, reason) {
    this._ws = null;
    this._gen++;
    if (code in STOP) return this._stop(code, reason || STOP[code]);
    if (code === 4401) {
      if (!this._o.getToken) return this._stop(code, reason || 'unauthenticated');
      this._token = null; // the next _open asks getToken
      if (!this._authTries++) return this._drop(reason || 'unauthenticated', 0, true);
    }
    this._retry(code === 1012 ? this._rand() * 2000 : 0, reason || `closed (${code})`, code);
  }

  _retry(extra, reason, code) {
    if (this.status === 'stopped') return;
    const up = this._welcomed && this._t.now() - this._welcomed >= (this._bo.resetAfter ?? 30000);
    if (up) this._attempt = 0;
    this._welcomed = false;
    const delay = backoffDelay(this._attempt++, this._bo, this._rand) + Math.floor(extra);
    this._later('_idleT');
    this._later('_retryT', () => this._open(), delay);
    this._status('connecting', { code, reason, delay });
  }

  /** Before the token's `exp`: a new one from getToken, handed to the open session. */
  _schedRefresh() {
    const exp = this._o.getToken && this._token && decodeJwt(this._token)?.exp;
    if (!exp) return this._later('_tokT');
    const left = exp * 1000 - this._t.now();
    const lead = Math.min(this._o.refreshBefore ?? 60000, left / 2);
    this._later('_tokT', () => this._refresh(), Math.max(1000, left - lead));
  }

  async _refresh() {
    const gen = this._gen;
    try {
      this._token = await this._o.getToken();
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit('error', { type: 'error', code: 'get_token_failed', message: String(e?.message || e) });
      return this._later('_tokT', () => this._refresh(), 5000);
    }
    // Between two connections the next one simply uses the new token.
    if (gen !== this._gen || this._ws?.readyState !== OPEN) return;
    if (this._noRefresh) return this._drop('token refresh', 0, true);
    this._send({ type: 'refresh', token: this._token });
    this._refreshSent = true;
    this._schedRefresh();
  }

  _stop(code, reason) {
    if (this.status === 'stopped') return;
    const ws = this._ws;
    this._ws = null;
    this._gen++;
    for (const t of ['_idleT', '_retryT', '_tokT']) this._later(t);
    try {
      ws?.close(1000, 'closed');
    } catch {}
    this._status('stopped', { code, reason });
  }
}
