// Test harness: a real OVASABI node (the engine's binary) on random ports of 127.0.0.1 with a
// temporary data dir (the approach of clients/js/test/node.js), and headless Chromium driven by
// playwright-core (Debian's /usr/bin/chromium; Playwright's own browser download is not used).
// The binary: $OVASABI_BIN, else ../../target/debug/ovasabi (`cargo build -p api`).

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
export const BIN = process.env.OVASABI_BIN || join(root, 'target', 'debug', 'ovasabi');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const skipReason = !existsSync(BIN)
  ? `no node binary at ${BIN} (cargo build -p api, or set OVASABI_BIN)`
  : !existsSync(CHROMIUM)
    ? `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`
    : false;
// In CI (`CI=true`, as .ci/run runs) a missing binary or browser is a failure, not a skip.
if (skipReason && process.env.CI) throw new Error(`browser tests cannot run: ${skipReason}`);
export const ADMIN_PASSWORD = 'console-tests-admin-pw';

const port = () => 20000 + Math.floor(Math.random() * 40000);

export class Node {
  /** `args`: extra flags, e.g. ['--access-token-ttl', '5s']. */
  constructor(args = []) {
    this.args = args;
    this.dir = mkdtempSync(join(tmpdir(), 'ovasabi-console-'));
    this.output = '';
  }

  get base() {
    return `http://127.0.0.1:${this.ports[0]}`;
  }

  /** Starts the node (again on the same ports and data dir after a stop). */
  async start() {
    for (let tries = 0; ; tries++) {
      this.ports ||= [port(), port(), port()];
      try {
        return await this._spawn();
      } catch (e) {
        if (tries >= 4 || this.started || !/in use/i.test(e.message)) throw e;
        this.ports = null;
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
      '--jwt-secret', 'console-browser-tests-secret-0123456789abcdef',
      `--admin-password=${ADMIN_PASSWORD}`,
      '--node-id', 'node-test',
      '--log-format', 'text',
    ];
    const child = (this.child = spawn(BIN, args, {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn', NO_COLOR: '1' },
    }));
    let out = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`node did not start in 30 s:\n${out}`)), 30000);
      const onData = (chunk) => {
        out += chunk;
        this.output += chunk;
        if (/ovasabi listening/.test(out)) {
          clearTimeout(timer);
          this.started = true;
          resolve(this);
        }
      };
      child.stdout.setEncoding('utf8').on('data', onData);
      child.stderr.setEncoding('utf8').on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`node exited (${code}) at start:\n${out}`));
      });
    });
  }

  /** SIGTERM (graceful: sessions get 1001) or SIGKILL. */
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

  /** A REST call as the admin (signed in on first use). */
  async request(method, path, body) {
    if (!this.token) {
      const t = await this._fetch('POST', '/api/auth/login', { login: 'admin', password: ADMIN_PASSWORD });
      this.token = t.access_token;
    }
    try {
      return await this._fetch(method, path, body, this.token);
    } catch (e) {
      if (!/: 401 /.test(e.message)) throw e;
      this.token = null;
      return this.request(method, path, body);
    }
  }

  async _fetch(method, path, body, token) {
    const res = await fetch(this.base + path, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  publish(id, name, data = {}) {
    return this.request('POST', `/api/campaigns/${id}/events`, { name, data, immediate: true });
  }
}

/** Headless Chromium; `page()` opens a 1280×800 page that records console errors. */
export async function browser() {
  const b = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  return {
    b,
    async page(options = {}) {
      const context = await b.newContext({ viewport: { width: 1280, height: 800 }, ...options });
      const page = await context.newPage();
      page.setDefaultTimeout(15000);
      page.errors = [];
      page.on('pageerror', (e) => page.errors.push(String(e)));
      page.on('console', (m) => {
        if (m.type() === 'error') page.errors.push(m.text());
      });
      // Only the node on 127.0.0.1 is ever reached.
      await context.route(/^(?!https?:\/\/127\.0\.0\.1[:/]|wss?:\/\/127\.0\.0\.1[:/]|data:|about:)/, (route) => route.abort());
      return page;
    },
    close: () => b.close(),
  };
}

/** Polls `fn` (async, truthy when done) every 100 ms; throws after `ms`. */
export async function until(fn, ms = 15000, what = 'condition') {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Signs in through the form. */
export async function signIn(page, base, login = 'admin', password = ADMIN_PASSWORD) {
  await page.goto(base + '/');
  await page.getByLabel('User name or email').fill(login);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** With OVASABI_SCREENSHOTS=1: `docs/img/console-<name>.png` (1280×800). */
export async function screenshot(page, name) {
  if (process.env.OVASABI_SCREENSHOTS !== '1') return;
  const dir = join(root, 'docs', 'img');
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `console-${name}.png`) });
}

/** The seqs of the events the live page lists, oldest first. */
export async function listedSeqs(page) {
  const seqs = await page.locator('[data-role="events"] li[data-seq]').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  return seqs.reverse();
}
