// Test harness: a real OVASABI node (the engine's binary) on random ports of 127.0.0.1 with a
// temporary data dir (clients/js/test/node.js's, signed in as the admin), and headless Chromium driven by
// playwright-core (Debian's /usr/bin/chromium; Playwright's own browser download is not used).
// The binary: $OVASABI_BIN, else ../../target/debug/ovasabi (`cargo build -p api`).

import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { BIN, Node as ClientTestNode } from '../../js/test/node.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
export { BIN };
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const skipReason = !existsSync(BIN)
  ? `no node binary at ${BIN} (cargo build -p api, or set OVASABI_BIN)`
  : !existsSync(CHROMIUM)
    ? `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`
    : false;
// In CI (`CI=true`, as .ci/run runs) a missing binary or browser is a failure, not a skip.
if (skipReason && process.env.CI) throw new Error(`browser tests cannot run: ${skipReason}`);
export const ADMIN_PASSWORD = 'console-tests-admin-pw';

/** A node without `--dev`, with the admin account (the client's test node, see clients/js). */
export class Node extends ClientTestNode {
  /** `args`: extra flags, e.g. ['--access-token-ttl', '5s']. */
  constructor(args = []) {
    super([...args, `--admin-password=${ADMIN_PASSWORD}`, '--node-id', 'node-test']);
  }

  /** A REST call as the admin (signed in on first use, again after a 401), or with `token`. */
  async request(method, path, body, ...token) {
    if (token.length) return super.request(method, path, body, ...token);
    if (!this.adminToken) await this.login('admin', ADMIN_PASSWORD);
    try {
      return await super.request(method, path, body);
    } catch (e) {
      if (!/: 401 /.test(e.message)) throw e;
      this.adminToken = null;
      return this.request(method, path, body);
    }
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
