// Unit tests: the client driven through a scripted WebSocket and a manual clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync } from 'node:zlib';
import { connect, backoffDelay, decodeJwt, mergePatch, streamUrl } from '../src/index.js';
import { FakeTimers, fakeWebSocket, flush, jwt } from './fakes.js';
import { record, until } from './node.js';

function setup(options = {}) {
  const timers = options.timers || new FakeTimers();
  const fake = fakeWebSocket();
  let r = 0.5;
  const sub = connect('http://node.test:8090', 'c1', {
    user: 'u1',
    WebSocket: fake.FakeWS,
    timers,
    random: () => r,
    ...options,
  });
  return { sub, timers, fake, rec: record(sub), setRandom: (v) => (r = v) };
}

const welcome = (seq, extra = {}) => ({ type: 'welcome', campaign: 'c1', user: 'u1', node: 'n', seq, epoch: 'E1', frequency_hz: 10, ...extra });
const ev = (seq, name = `e${seq}`) => ({ seq, name, data: { seq }, ts: 1 });
const tick = (seq, events = [], state) => ({ type: 'tick', campaign: 'c1', seq, ts: 1, events, ...(state ? { state } : {}) });

/** Opens the current socket and sends a welcome and its first tick (with state). */
async function live(fake, seq = 0, state = { v: 0 }, welcomeExtra = {}) {
  await flush();
  const ws = fake.last();
  ws.open();
  ws.frame(welcome(seq, welcomeExtra));
  ws.frame(tick(seq, [], state));
  await flush();
  return ws;
}

test('URLs: http→ws, https→wss, path prefix, encoding, query', () => {
  assert.equal(streamUrl('http://h:8090', 'c 1', 'u/1'), 'ws://h:8090/ws/c%201/u%2F1');
  assert.equal(streamUrl('https://h/base/', 'c', 'u', { since: 5, epoch: 'E', token: null }), 'wss://h/base/ws/c/u?since=5&epoch=E');
  assert.equal(streamUrl('ws://h:1', 'c', undefined, { compress: 'deflate' }), 'ws://h:1/ws/c?compress=deflate');
  assert.equal(streamUrl('wss://h', 'c', 'u'), 'wss://h/ws/c/u');
});

test('decodeJwt reads the payload without verifying; garbage gives null', () => {
  assert.deepEqual(decodeJwt(jwt({ sub: 'ü-1', exp: 5 })), { sub: 'ü-1', exp: 5 });
  assert.equal(decodeJwt('nope'), null);
  assert.equal(decodeJwt(''), null);
});

test('with a token, /ws/{campaign} and the token in the first frame, out of the URL', async () => {
  const token = jwt({ sub: 'alice' });
  const { fake, sub } = setup({ user: undefined, token });
  await flush();
  const ws = fake.last();
  const u = new URL(ws.url);
  assert.equal(u.pathname, '/ws/c1');
  assert.equal(u.searchParams.get('token'), null);
  assert.equal(u.protocol, 'ws:');
  assert.deepEqual(ws.sent, []);
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'auth', token }]);
  sub.close();
});

test("the token goes in the query to watch as another user than its subject, or with tokenIn: 'query'", async () => {
  const token = jwt({ sub: 'manager' });
  for (const [options, path] of [
    [{ user: 'bob' }, '/ws/c1/bob'],
    [{ user: undefined, tokenIn: 'query' }, '/ws/c1/manager'],
  ]) {
    const { fake, sub } = setup({ token, ...options });
    await flush();
    const ws = fake.last();
    assert.equal(new URL(ws.url).pathname, path);
    assert.equal(ws.query.token, token);
    ws.open();
    assert.deepEqual(ws.sent, []);
    sub.close();
  }
});

test('back-off: full jitter under min(30 s, 0.5 s · 2^n)', () => {
  const ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  ceilings.forEach((c, n) => {
    assert.equal(backoffDelay(n, {}, () => 0), 0);
    assert.equal(backoffDelay(n, {}, () => 0.999999), c - 1);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(n);
      assert.ok(d >= 0 && d < c, `attempt ${n}: ${d}`);
    }
  });
  assert.equal(backoffDelay(5000, {}, () => 0.999999), 29999);
  assert.equal(backoffDelay(2, { initialDelay: 100, maxDelay: 300 }, () => 0.999999), 299);
});

test('reconnect delays grow per failed attempt and reset after 30 s live', async () => {
  const { fake, timers, rec, sub, setRandom } = setup();
  setRandom(0.999999);
  await flush();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    fake.last().serverClose(1006);
    await flush();
    const s = rec.statuses.at(-1);
    assert.equal(s.status, 'connecting');
    assert.equal(s.code, 1006);
    delays.push(s.delay);
    const before = fake.sockets.length;
    await timers.advance(s.delay - 1);
    assert.equal(fake.sockets.length, before, 'not before the delay');
    await timers.advance(1);
    assert.equal(fake.sockets.length, before + 1, 'a new socket after the delay');
  }
  assert.deepEqual(delays, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  // Live for 30 s: the next failure starts again from the first step.
  await live(fake);
  await timers.advance(30000);
  fake.last().serverClose(1011);
  await flush();
  assert.equal(rec.statuses.at(-1).delay, 499);
  // Live for less: it goes on growing.
  await timers.advance(499);
  await live(fake);
  await timers.advance(1000);
  fake.last().serverClose(1001);
  await flush();
  assert.equal(rec.statuses.at(-1).delay, 999);
  sub.close();
  assert.equal(timers.queue.size, 0, 'no timer left after close');
});

test('1012 adds a random delay of up to 2 s', async () => {
  const { fake, rec, sub } = setup(); // random 0.5: back-off 250 ms + 1000 ms
  await live(fake);
  fake.last().serverClose(1012, 'resync');
  await flush();
  assert.deepEqual(rec.statuses.at(-1), { status: 'connecting', code: 1012, reason: 'resync', delay: 1250 });
  sub.close();
});

test('welcome, state, events once and in order; state replaces; resume carries since and epoch', async () => {
  const { fake, timers, rec, sub } = setup();
  const ws = await live(fake, 3, { a: 1 });
  assert.deepEqual(rec.statuses.map((s) => s.status), ['connecting', 'live']);
  assert.equal(sub.seq, 3);
  assert.deepEqual(sub.state, { a: 1 });
  ws.frame(tick(5, [ev(4), ev(5)]));
  ws.frame(tick(6, [ev(5), ev(6)], { b: 2 })); // 5 again: dropped
  ws.frame({ type: 'message', seq: 6, name: 'dm', data: {}, ts: 1 });
  ws.frame({ type: 'notification', id: 'n1' });
  ws.frame({ type: 'config', frequency_hz: 2 });
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [4, 5, 6]);
  assert.deepEqual(rec.states, [{ a: 1 }, { b: 2 }]);
  assert.deepEqual(sub.state, { b: 2 });
  assert.equal(rec.messages.length, 1);
  assert.equal(sub.frequency, 2);
  ws.serverClose(1006);
  await flush();
  await timers.advance(rec.statuses.at(-1).delay);
  const ws2 = fake.last();
  assert.notEqual(ws2, ws);
  assert.equal(ws2.query.since, '6');
  assert.equal(ws2.query.epoch, 'E1');
  ws2.open();
  ws2.frame(welcome(8, { recovered: true }));
  ws2.frame(tick(8, [ev(5), ev(6), ev(7), ev(8)], { c: 3 }));
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [4, 5, 6, 7, 8]);
  assert.equal(sub.status, 'live');
  assert.ok(!rec.statuses.some((s) => s.status === 'resyncing'));
  sub.close();
});

test('a gap in events reconnects with since and fills it, each event once', async () => {
  const { fake, timers, rec, sub } = setup();
  const ws = await live(fake, 0);
  ws.frame(tick(2, [ev(1), ev(2)]));
  ws.frame(tick(5, [ev(4), ev(5)])); // 3 is missing
  ws.frame(tick(6, [ev(6)])); // after the gap: ignored, the resume brings it
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2]);
  assert.equal(rec.errors.at(-1).code, 'gap');
  assert.deepEqual(ws.closedBy, { code: 1000, reason: 'gap' });
  assert.equal(sub.status, 'connecting');
  await timers.advance(rec.statuses.at(-1).delay);
  const ws2 = fake.last();
  assert.equal(ws2.query.since, '2');
  ws2.open();
  ws2.frame(welcome(6, { recovered: true }));
  ws2.frame(tick(6, [ev(3), ev(4), ev(5), ev(6)], { s: 1 }));
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
  sub.close();
});

test('a tick whose seq jumps past the last event is a gap too', async () => {
  const { fake, rec, sub } = setup();
  const ws = await live(fake, 10);
  ws.frame(tick(12, [ev(11)])); // 12 was counted but not sent
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [11]);
  assert.equal(rec.errors.at(-1).code, 'gap');
  assert.equal(ws.closedBy.reason, 'gap');
  // Messages do not take a seq: no gap for them.
  const { fake: f2, rec: r2, sub: s2 } = setup();
  const w2 = await live(f2, 10);
  w2.frame({ type: 'message', seq: 14, name: 'dm', data: {}, ts: 1 });
  await flush();
  assert.equal(w2.closedBy, null);
  assert.equal(r2.messages.length, 1);
  sub.close();
  s2.close();
});

test('recovered:false: resyncing until the state, then new events from the welcome seq', async () => {
  const { fake, timers, rec, sub } = setup();
  const ws = await live(fake, 0, { v: 1 });
  ws.frame(tick(2, [ev(1), ev(2)]));
  await flush();
  ws.serverClose(1006);
  await flush();
  await timers.advance(rec.statuses.at(-1).delay);
  const ws2 = fake.last();
  assert.equal(ws2.query.since, '2');
  ws2.open();
  // A restarted node numbers on above (1000): the history is gone.
  ws2.frame(welcome(1000, { recovered: false, epoch: 'E1' }));
  await flush();
  assert.equal(sub.status, 'resyncing');
  ws2.frame(tick(1000, [], { v: 9 }));
  ws2.frame(tick(1001, [ev(1001)]));
  await flush();
  assert.equal(sub.status, 'live');
  assert.deepEqual(sub.state, { v: 9 });
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2, 1001]);
  assert.deepEqual(rec.statuses.map((s) => s.status), ['connecting', 'live', 'connecting', 'resyncing', 'live']);
  // A node that started over below our seq: the welcome's seq is the new baseline.
  ws2.serverClose(1001);
  await flush();
  await timers.advance(rec.statuses.at(-1).delay);
  const ws3 = fake.last();
  ws3.open();
  ws3.frame(welcome(0, { recovered: false, epoch: 'E2' }));
  ws3.frame(tick(0, [], { v: 0 }));
  ws3.frame(tick(1, [ev(1, 'new')]));
  await flush();
  assert.equal(rec.events.at(-1).name, 'new');
  assert.equal(sub.epoch, 'E2');
  sub.close();
});

test('stops on 1000 (campaign ended), 4400, 4403, 4404 with the reason', async () => {
  for (const [code, reason, expected] of [
    [1000, 'campaign ended', 'campaign ended'],
    [1000, '', 'campaign ended'],
    [4400, 'bad user id', 'bad user id'],
    [4403, '', 'forbidden'],
    [4404, '', 'not found'],
  ]) {
    const { fake, timers, rec, sub } = setup();
    await live(fake);
    fake.last().serverClose(code, reason);
    await flush();
    assert.deepEqual(rec.statuses.at(-1), { status: 'stopped', code, reason: expected });
    assert.equal(sub.status, 'stopped');
    assert.equal(timers.queue.size, 0);
    assert.equal(fake.sockets.length, 1);
  }
});

test('HTTP refusals before the upgrade (ws) map to 44xx', async () => {
  const a = setup();
  await flush();
  a.fake.last().httpRefuse(404);
  await flush();
  assert.deepEqual(a.rec.statuses.at(-1), { status: 'stopped', code: 4404, reason: 'not found' });
  const b = setup();
  await flush();
  b.fake.last().httpRefuse(401); // no getToken: nothing else to try
  await flush();
  assert.deepEqual(b.rec.statuses.at(-1), { status: 'stopped', code: 4401, reason: 'unauthenticated' });
  const c = setup();
  await flush();
  c.fake.last().httpRefuse(503); // not a refusal of this client: retry
  await flush();
  assert.equal(c.rec.statuses.at(-1).status, 'connecting');
  c.sub.close();
});

test('reconnects on 1001, 1006, 1011, 4008, 4009 and unknown codes', async () => {
  for (const code of [1001, 1006, 1011, 4008, 4009, 1005, 1008]) {
    const { fake, timers, rec, sub } = setup();
    await live(fake);
    fake.last().serverClose(code);
    await flush();
    assert.equal(rec.statuses.at(-1).status, 'connecting', `code ${code}`);
    await timers.advance(rec.statuses.at(-1).delay);
    assert.equal(fake.sockets.length, 2, `code ${code}`);
    sub.close();
  }
});

test('4401: getToken, then reconnect at once with the new token; again with back-off', async () => {
  let n = 0;
  const { fake, timers, rec, sub } = setup({ token: 'old', getToken: async () => `new${++n}` });
  await flush();
  assert.equal(fake.last().query.token, 'old');
  fake.last().httpRefuse(401);
  await timers.advance(0);
  assert.equal(n, 1);
  assert.equal(fake.sockets.length, 2);
  assert.equal(fake.last().query.token, 'new1');
  // Refused again without a welcome between: back-off.
  fake.last().serverClose(4401, 'token revoked');
  await flush();
  assert.equal(rec.statuses.at(-1).status, 'connecting');
  assert.equal(rec.statuses.at(-1).code, 4401);
  assert.ok(rec.statuses.at(-1).delay > 0);
  await timers.advance(rec.statuses.at(-1).delay);
  assert.equal(n, 2);
  assert.equal(fake.last().query.token, 'new2');
  await live(fake);
  assert.equal(sub.status, 'live');
  // After a welcome, a revocation gets an immediate retry again.
  fake.last().serverClose(4401, 'token revoked');
  await timers.advance(0);
  assert.equal(n, 3);
  assert.equal(fake.sockets.length, 4);
  sub.close();
});

test('getToken is called first when there is no token, and when it fails the client retries', async () => {
  let fail = true;
  const { fake, timers, rec, sub } = setup({ user: undefined, getToken: () => (fail ? Promise.reject(new Error('offline')) : jwt({ sub: 'bob' })) });
  await flush();
  assert.equal(fake.sockets.length, 0);
  assert.equal(rec.errors.at(-1).code, 'get_token_failed');
  assert.equal(rec.statuses.at(-1).status, 'connecting');
  fail = false;
  await timers.advance(rec.statuses.at(-1).delay);
  assert.equal(new URL(fake.last().url).pathname, '/ws/c1');
  fake.last().open();
  assert.equal(decodeJwt(fake.last().sent[0].token).sub, 'bob');
  sub.close();
});

test('before exp: getToken, a refresh frame; unknown_type falls back to reconnecting', async () => {
  const timers0 = new FakeTimers();
  const exp = (ms) => Math.floor((timers0.t + ms) / 1000);
  const tokens = [jwt({ sub: 'u1', exp: exp(300000) }), jwt({ sub: 'u1', exp: exp(600000) }), jwt({ sub: 'u1', exp: exp(900000) })];
  let calls = 0;
  const { fake, timers, sub } = setup({ timers: timers0, token: tokens[0], getToken: () => tokens[++calls], idleTimeout: 1e9 });
  const ws = await live(fake);
  await timers.advance(239000);
  assert.equal(calls, 0);
  await timers.advance(1000); // a minute before exp
  assert.equal(calls, 1);
  assert.deepEqual(ws.sent.at(-1), { type: 'refresh', token: tokens[1] });
  assert.equal(ws.closedBy, null);
  // This node does not know `refresh`: reconnect at once with the new token.
  ws.frame({ type: 'error', code: 'unknown_type', message: 'unknown frame type "refresh"' });
  await timers.advance(0);
  assert.equal(ws.closedBy.reason, 'token refresh');
  assert.equal(fake.sockets.length, 2);
  assert.equal(fake.last().query.since, '0');
  // Next time it does not try the frame: it reconnects a minute before exp.
  const ws2 = await live(fake);
  assert.deepEqual(ws2.sent, [{ type: 'auth', token: tokens[1] }]);
  await timers.advance(300000 - 1);
  assert.equal(calls, 1);
  await timers.advance(1);
  assert.equal(calls, 2);
  assert.equal(ws2.sent.length, 1);
  assert.equal(ws2.closedBy.reason, 'token refresh');
  fake.last().open();
  assert.deepEqual(fake.last().sent, [{ type: 'auth', token: tokens[2] }]);
  sub.close();
});

test('a refused refresh token is asked for again; refreshed is quiet', async () => {
  const timers0 = new FakeTimers();
  const exp = (ms) => Math.floor((timers0.t + ms) / 1000);
  let calls = 0;
  const { fake, timers, rec, sub } = setup({ timers: timers0, getToken: () => (++calls, jwt({ sub: 'u1', exp: exp(600000) })), idleTimeout: 1e9 });
  const ws = await live(fake);
  assert.equal(calls, 1);
  await timers.advance(540000);
  assert.equal(calls, 2);
  ws.frame({ type: 'error', code: 'unauthenticated', message: 'bad token' });
  await timers.advance(4999);
  assert.equal(calls, 2);
  await timers.advance(1);
  assert.equal(calls, 3);
  assert.equal(ws.sent.filter((f) => f.type === 'refresh').length, 2);
  ws.frame({ type: 'refreshed', expires_at: (timers.t + 600000) });
  await flush();
  assert.equal(ws.closedBy, null);
  assert.equal(rec.errors.length, 1);
  sub.close();
});

test('close while getToken is pending leaves no timer behind', async () => {
  let reject;
  const { timers, sub } = setup({ getToken: () => new Promise((_, r) => (reject = r)) });
  await flush();
  sub.close();
  reject(new Error('gone'));
  await flush();
  assert.equal(timers.queue.size, 0);
  assert.equal(sub.status, 'stopped');
});

test('a node that accepts refresh keeps the session', async () => {
  const timers0 = new FakeTimers();
  const exp = (ms) => Math.floor((timers0.t + ms) / 1000);
  let calls = 0;
  const { fake, timers, sub } = setup({
    timers: timers0,
    getToken: () => (++calls, jwt({ sub: 'u1', exp: exp(60000) })),
    idleTimeout: 1e9,
  });
  await flush();
  assert.equal(calls, 1);
  const ws = await live(fake);
  await timers.advance(30000);
  assert.equal(calls, 2);
  assert.equal(ws.sent.at(-1).type, 'refresh');
  ws.frame(tick(1, [ev(1)]));
  await timers.advance(30000);
  assert.equal(calls, 3);
  assert.equal(ws.sent.filter((f) => f.type === 'refresh').length, 2);
  assert.equal(ws.closedBy, null);
  assert.equal(fake.sockets.length, 1);
  sub.close();
});

test('dead connection: a ping at idleTimeout/2, a reconnect at idleTimeout', async () => {
  const { fake, timers, rec, sub } = setup({ idleTimeout: 10000 });
  const ws = await live(fake);
  await timers.advance(4999);
  assert.equal(ws.sent.length, 0);
  await timers.advance(1);
  assert.deepEqual(ws.sent, [{ type: 'ping' }]);
  ws.frame({ type: 'pong' }); // anything that arrives keeps it alive
  await timers.advance(9000);
  assert.equal(ws.closedBy, null);
  await timers.advance(6000);
  assert.equal(ws.closedBy?.reason, 'idle');
  assert.equal(rec.statuses.at(-1).status, 'connecting');
  // A socket that never opens is given up the same way.
  await timers.advance(rec.statuses.at(-1).delay);
  const ws2 = fake.last();
  await timers.advance(10000);
  assert.equal(ws2.closedBy?.reason, 'idle');
  sub.close();
});

test('compressed frames are inflated and kept in order with text frames', async () => {
  const { fake, rec, sub } = setup({ compress: true });
  await flush();
  const ws = fake.last();
  assert.equal(ws.query.compress, 'deflate');
  assert.equal(ws.binaryType, 'arraybuffer');
  ws.open();
  const bin = (f) => {
    const b = deflateRawSync(Buffer.from(JSON.stringify(f)));
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  };
  ws.frame(welcome(0));
  ws.frame(bin(tick(0, [], { z: 1 })));
  ws.frame(bin(tick(2, [ev(1), ev(2)])));
  ws.frame({ type: 'message', seq: 2, name: 'after-2', data: {}, ts: 1 }); // text, after the binary ones
  ws.frame(bin(tick(3, [ev(3)], { z: 2 })));
  await until(() => rec.events.length === 3 || rec.errors.length, 5000, 'inflated frames');
  assert.deepEqual(rec.errors, []);
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2, 3]);
  assert.deepEqual(rec.states, [{ z: 1 }, { z: 2 }]);
  assert.equal(rec.messages[0].name, 'after-2');
  assert.equal(sub.status, 'live');
  // A frame that cannot be read is reported; the next ones still flow.
  ws.frame(new Uint8Array([1, 2, 3]).buffer);
  ws.frame(tick(4, [ev(4)]));
  await until(() => rec.events.length === 4, 5000, 'the frame after a bad one');
  assert.equal(rec.errors.at(-1).code, 'bad_frame');
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2, 3, 4]);
  sub.close();
});

test('publish sends client events while open, returns false otherwise; close stops', async () => {
  const { fake, rec, sub } = setup();
  await flush();
  assert.equal(sub.publish('click', { x: 1 }), false);
  const ws = await live(fake);
  assert.equal(sub.publish('click', { x: 1 }), true);
  assert.deepEqual(ws.sent, [{ type: 'event', name: 'click', data: { x: 1 } }]);
  sub.close();
  assert.deepEqual(ws.closedBy, { code: 1000, reason: 'closed' });
  assert.deepEqual(rec.statuses.at(-1), { status: 'stopped', code: 1000, reason: 'closed' });
  ws.frame(tick(1, [ev(1)])); // nothing after close
  await flush();
  assert.equal(rec.events.length, 0);
  assert.equal(sub.publish('click', {}), false);
});

test('close before the first connection opens nothing', async () => {
  const { fake, sub } = setup();
  sub.close();
  await flush();
  assert.equal(fake.sockets.length, 0);
});

test('without a WebSocket class it says how to pass one', () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(() => connect('http://h', 'c', { user: 'u' }), /pass one/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test('a listener that closes the subscription stops the delivery at once', async () => {
  const { fake, rec, sub } = setup();
  const ws = await live(fake);
  sub.on('event', (e) => e.seq === 2 && sub.close());
  ws.frame(tick(3, [ev(1), ev(2), ev(3)], { after: true }));
  await flush();
  assert.deepEqual(rec.events.map((e) => e.seq), [1, 2]);
  // Closed by the tick's last event: not its state either.
  const b = setup();
  const ws2 = await live(b.fake);
  b.sub.on('event', (e) => e.seq === 3 && b.sub.close());
  ws2.frame(tick(3, [ev(1), ev(2), ev(3)], { after: true }));
  await flush();
  assert.deepEqual(b.rec.events.map((e) => e.seq), [1, 2, 3]);
  assert.equal(b.rec.states.length, 1);
  assert.equal(sub.status, 'stopped');
  assert.equal(rec.states.length, 1);
});

test('mergePatch follows RFC 7396 and leaves its input alone', () => {
  const target = { a: 'b', c: { d: 'e', f: 'g' }, keep: [1, 2] };
  const copy = structuredClone(target);
  assert.deepEqual(mergePatch(target, { a: 'z', c: { f: null }, n: { x: 1 } }), { a: 'z', c: { d: 'e' }, keep: [1, 2], n: { x: 1 } });
  assert.deepEqual(target, copy);
  assert.deepEqual(mergePatch({ a: [1] }, { a: [2] }), { a: [2] });
  assert.deepEqual(mergePatch([1], { a: 1 }), { a: 1 });
  assert.deepEqual(mergePatch({ a: 1 }, 'x'), 'x');
});

test('delta: patches on top of the version before; a patch to another version resumes for the whole state', async () => {
  const { fake, timers, rec, sub } = setup({ delta: true });
  await flush();
  assert.equal(fake.last().query.delta, '1');
  const ws = fake.last();
  ws.open();
  ws.frame(welcome(0));
  ws.frame({ ...tick(0, [], { score: 0, board: { a: 1 } }), state_version: 4 });
  await flush();
  ws.frame({ type: 'tick', campaign: 'c1', seq: 0, ts: 1, events: [], state_patch: { score: 1 }, state_version: 5 });
  await flush();
  assert.deepEqual(sub.state, { score: 1, board: { a: 1 } });
  assert.deepEqual(rec.states.at(-1), { score: 1, board: { a: 1 } });
  // Version 6 was lost (a dropped frame): the patch to 7 cannot apply.
  ws.frame({ type: 'tick', campaign: 'c1', seq: 0, ts: 1, events: [], state_patch: { score: 3 }, state_version: 7 });
  await timers.advance(0);
  assert.equal(rec.errors.at(-1).code, 'state_gap');
  assert.deepEqual(sub.state, { score: 1, board: { a: 1 } }, 'the state is not half-applied');
  assert.equal(fake.sockets.length, 2);
  assert.equal(fake.last().query.since, '0');
  sub.close();
});
