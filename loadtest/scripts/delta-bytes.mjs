#!/usr/bin/env node
// Bytes on the wire per client per tick for a ~10 KB state whose one field changes at 10 Hz:
// four sessions of one campaign (whole states, deflate, delta, delta + deflate) watch it for
// SECS seconds while the state's `score` is patched every 100 ms. Counts each frame's WebSocket
// header and payload as sent by the node (server frames are unmasked), not the first tick
// (every session gets the whole state when it joins).
//
//   cargo run --release -- --dev &            # prints the admin token
//   OVASABI_TOKEN=eyJ... node loadtest/scripts/delta-bytes.mjs http://127.0.0.1:8090 10
//
// Uses the `ws` package of clients/js (cd clients/js && npm ci).
import { createRequire } from 'node:module';
import { inflateRawSync } from 'node:zlib';
const require = createRequire(new URL('../../clients/js/package.json', import.meta.url));
const { WebSocket } = require('ws');

const base = process.argv[2] || 'http://127.0.0.1:8090';
const secs = Number(process.argv[3] || 10);
const token = process.env.OVASABI_TOKEN;
if (!token) throw new Error('set OVASABI_TOKEN to an access token of a campaign manager or admin');

const call = async (method, path, body) => {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
};

const board = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`cell${String(i).padStart(3, '0')}`, { label: 'x'.repeat(80), n: i }]));
const state = { score: 0, board };
const slug = `delta-bytes-${Date.now()}`;
const c = await call('POST', '/api/campaigns', { name: slug, slug, metadata: { scheduling: { frequency: 10 } }, state });
const stateBytes = JSON.stringify(state).length;

const header = (n) => 2 + (n >= 126 ? (n >= 65536 ? 8 : 2) : 0);
const modes = { whole: '', deflate: '?compress=deflate', delta: '?delta=1', 'delta+deflate': '?delta=1&compress=deflate' };
const seen = {};
const sockets = await Promise.all(
  Object.entries(modes).map(
    ([mode, q]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws/${c.id}/${mode.replace('+', '-')}${q}`, { perMessageDeflate: false });
        const s = (seen[mode] = { ticks: 0, bytes: 0, patches: 0, skipped: false });
        ws.on('message', (data, binary) => {
          const text = binary ? inflateRawSync(data).toString() : String(data);
          if (text && !text.startsWith('{"type":"tick"')) return; // welcome, config
          if (!s.skipped) return void (s.skipped = true); // the join tick: whole state
          s.ticks++;
          s.bytes += data.length + header(data.length);
          if (text.includes('"state_patch"')) s.patches++;
        });
        ws.on('open', () => resolve(ws));
        ws.on('error', reject);
      }),
  ),
);
await new Promise((r) => setTimeout(r, 500));
const start = Date.now();
let score = 0;
while (Date.now() - start < secs * 1000) {
  await call('PATCH', `/api/campaigns/${c.id}/state`, { score: ++score });
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 500));
sockets.forEach((ws) => ws.close());
await call('DELETE', `/api/campaigns/${c.id}`);

console.log(`state ${stateBytes} bytes, ${score} changes in ${secs} s at 10 Hz`);
const whole = seen.whole.bytes / Math.max(1, seen.whole.ticks);
for (const [mode, s] of Object.entries(seen)) {
  const perTick = s.bytes / Math.max(1, s.ticks);
  console.log(`${mode.padEnd(14)} ${String(s.ticks).padStart(4)} ticks  ${perTick.toFixed(1).padStart(8)} bytes/tick  ${(whole / perTick).toFixed(1).padStart(6)}x fewer than whole  (${s.patches} patches)`);
}
