// Test helper: starts a real OVASABI node (the engine's binary) on random high ports of
// 127.0.0.1 with a temporary data dir, and talks REST to it.
// The binary: $OVASABI_BIN, else ../../target/debug/ovasabi (build it with `cargo build -p api`).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.OVASABI_BIN || join(here, '..', '..', '..', 'target', 'debug', 'ovasabi');
export const haveBinary = existsSync(BIN);
export const skipReason = haveBinary ? false : `no node binary at ${BIN} (cargo build -p api, or set OVASABI_BIN)`;

const port = () => 20000 + Math.floor(Math.random() * 40000);

export class Node {
  /** `args`: extra flags, e.g. ['--dev'] or ['--admin-password', 'pw']. */
  constructor(args = ['--dev']) {
    this.args = args;
    this.dir = mkdtempSync(join(tmpdir(), 'ovasabi-js-'));
    this.secret = 'js-client-tests-secret-0123456789abcdef';
    this.output = '';
  }

  get base() {
    return `http://127.0.0.1:${this.ports[0]}`;
  }

  /** Starts the node (again, on the same ports and data dir after a stop). */
  async start() {
    for (let tries = 0; ; tries++) {
      this.ports ||= [port(), port(), port()];
      try {
        return await this._spawn();
      } catch (e) {
        if (tries >= 4 || this.started || !/in use/i.test(e.message)) throw e;
        this.ports = null; // those ports were taken: others
      }
    }
  }

  _spawn() {
    const [http, grpc, metrics] = this.ports;
    const args = [
      ...this.args,
      '--http-addr', `127.0.0.1:${http}`,
      '--grpc-addr', `127.0.0.1:${grpc}`,
      '--metrics-addr', `127.0.0.1:${metrics}`,
      '--data-dir', this.dir,
      '--jwt-secret', this.secret,
      '--log-format', 'text',
    ];
    const child = (this.child = spawn(BIN, args, {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', NO_COLOR: '1' },
    }));
    let out = '';
    return new Promise((resolve, reject) => {
      const onData = (chunk) => {
        out += chunk;
        this.output += chunk;
        const token = /admin token \(valid [^)]*\):\n(\S+)/.exec(out);
        if (/ovasabi listening/.test(out) && (token || !this.args.includes('--dev'))) {
          if (token) this.adminToken = token[1];
          this.started = true;
          resolve(this);
        }
      };
      child.stdout.setEncoding('utf8').on('data', onData);
      child.stderr.setEncoding('utf8').on('data', onData);
      child.once('exit', (code) => reject(new Error(`node exited (${code}) at start:\n${out}`)));
    });
  }

  /** Stops the node: SIGTERM (graceful, sessions get 1001) or SIGKILL (sessions see 1006). */
  async stop(signal = 'SIGTERM') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode) return;
    await new Promise((resolve) => {
      child.once('exit', resolve);
      child.kill(signal);
    });
  }

  async dispose() {
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  async request(method, path, body, token = this.adminToken) {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        'content-type': 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return json;
  }

  async login(login, password) {
    const t = await this.request('POST', '/api/auth/login', { login, password }, null);
    this.adminToken = t.access_token;
    return t;
  }

  /** Creates an (active) campaign; `metadata` merges over a 10 Hz schedule. */
  createCampaign(slug, metadata = {}) {
    return this.request('POST', '/api/campaigns', {
      name: slug,
      slug,
      metadata: { scheduling: { frequency: 10 }, ...metadata },
    });
  }

  publish(id, name, data = {}) {
    return this.request('POST', `/api/campaigns/${id}/events`, { name, data, immediate: true });
  }

  setState(id, state) {
    return this.request('PUT', `/api/campaigns/${id}/state`, state);
  }

  end(id) {
    return this.request('PATCH', `/api/campaigns/${id}`, { status: 'ended' });
  }
}

/** Resolves when `pred()` holds (polled), or rejects after `ms`. */
export async function until(pred, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Records what a subscription emits. */
export function record(sub) {
  const r = { events: [], states: [], statuses: [], messages: [], errors: [] };
  sub.on('event', (e) => r.events.push(e));
  sub.on('state', (s) => r.states.push(s));
  sub.on('status', (s) => r.statuses.push(s));
  sub.on('message', (m) => r.messages.push(m));
  sub.on('error', (e) => r.errors.push(e));
  return r;
}
