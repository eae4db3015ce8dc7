// Integration tests: the client against a real node (the engine's binary, see test/node.js),
// over real sockets with the `ws` package.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { connect, decodeJwt } from '../src/index.js';
import { jwt } from './fakes.js';
import { Node, record, until, skipReason } from './node.js';

/** `ws`'s WebSocket, remembering its sockets and counting the binary frames they receive. */
function spyWebSocket() {
  const spy = { sockets: [], binary: 0, text: 0 };
  spy.WS = class extends WebSocket {
    constructor(url) {
      super(url);
      spy.sockets.push(this);
      this.on('message', (_data, isBinary) => (isBinary ? spy.binary++ : spy.text++));
    }
  };
  return spy;
}

const fast = { initialDelay: 100, maxDelay: 1000 };
const names = (r) => r.events.map((e) => e.name);

function assertOnceInOrder(r) {
  const seqs = r.events.map((e) => e.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq order: ${seqs}`);
}

describe('against a dev node', { skip: skipReason }, () => {
  let node;
  const subs = [];
  const open = (campaign, options) => {
    const sub = connect(node.base, campaign, { user: 'u1', WebSocket, backoff: fast, ...options });
    subs.push(sub);
    return sub;
  };
  before(async () => {
    node = await new Node(['--dev']).start();
  });
  after(async () => {
    subs.forEach((s) => s.close());
    await node?.dispose();
  });

  test('welcome, state, events, messages and client events', async () => {
    const c = await node.createCampaign('basic', { custom_rules: { client_events: true } });
    await node.setState(c.id, { round: 1 });
    const sub = open('basic'); // by slug
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    assert.equal(sub.welcome.campaign, c.id);
    assert.equal(sub.welcome.user, 'u1');
    assert.equal(sub.frequency, 10);
    assert.deepEqual(sub.state, { round: 1 });
    for (let i = 1; i <= 5; i++) await node.publish(c.id, `e${i}`, { i });
    await node.setState(c.id, { round: 2 });
    await node.request('POST', `/api/campaigns/${c.id}/users/u1/messages`, { name: 'dm', data: { hi: true } });
    assert.equal(sub.publish('click', { x: 1 }), true);
    await until(() => r.events.length === 6 && sub.state?.round === 2 && r.messages.length === 1, 5000, 'events');
    assert.deepEqual(names(r), ['e1', 'e2', 'e3', 'e4', 'e5', 'click']);
    assert.deepEqual(r.events[0].data, { i: 1 });
    assert.equal(r.events[5].user, 'u1');
    assertOnceInOrder(r);
    assert.equal(r.messages[0].name, 'dm');
    assert.deepEqual(r.states.at(-1), { round: 2 });
    assert.deepEqual(r.statuses.map((s) => s.status), ['connecting', 'live']);
    assert.deepEqual(r.errors, []);
  });

  test('delta: state changes arrive as merge patches, listeners get the whole state', async () => {
    const c = await node.createCampaign('delta');
    const board = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`cell${i}`, 'x'.repeat(40)]));
    await node.setState(c.id, { score: 0, board });
    const spy = spyWebSocket();
    const sub = open('delta', { delta: true, WebSocket: spy.WS });
    const r = record(sub);
    const frames = [];
    await until(() => sub.status === 'live', 5000, 'live');
    spy.sockets[0].on('message', (m) => frames.push(JSON.parse(String(m))));
    for (let score = 1; score <= 3; score++) {
      await node.request('PATCH', `/api/campaigns/${c.id}/state`, { score });
      await until(() => sub.state?.score === score, 5000, `score ${score}`);
    }
    assert.deepEqual(sub.state, { score: 3, board });
    assert.deepEqual(r.states.at(-1), { score: 3, board });
    assert.ok(frames.some((f) => f.state_patch?.score === 3), JSON.stringify(frames));
    assert.ok(frames.every((f) => !('state' in f)), 'no whole state after the first');
    assert.deepEqual(r.errors, []);
  });

  test('a dropped connection resumes with since: recovered, every event once', async () => {
    const c = await node.createCampaign('resume');
    const spy = spyWebSocket();
    // random 0.99: the reconnection waits ~2 s, time to publish while it is away.
    const sub = open('resume', { WebSocket: spy.WS, backoff: { initialDelay: 2000 }, random: () => 0.99 });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    for (let i = 1; i <= 3; i++) await node.publish(c.id, `a${i}`);
    await until(() => r.events.length === 3, 5000, 'first events');
    spy.sockets[0].terminate(); // as a network failure: 1006
    await until(() => sub.status === 'connecting', 5000, 'the drop');
    for (let i = 1; i <= 3; i++) await node.publish(c.id, `b${i}`);
    await until(() => r.events.length === 6, 10000, 'the missed events');
    assert.equal(sub.welcome.recovered, true);
    assert.deepEqual(names(r), ['a1', 'a2', 'a3', 'b1', 'b2', 'b3']);
    assertOnceInOrder(r);
    assert.equal(spy.sockets.length, 2);
    assert.ok(!r.statuses.some((s) => s.status === 'resyncing'));
  });

  test('compressed tick frames', async () => {
    const c = await node.createCampaign('deflate');
    await node.setState(c.id, { big: 'x'.repeat(2000) });
    const spy = spyWebSocket();
    const sub = open('deflate', { WebSocket: spy.WS, compress: true });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    assert.equal(sub.state.big.length, 2000);
    for (let i = 1; i <= 20; i++) await node.publish(c.id, `z${i}`, { i });
    await node.setState(c.id, { big: 'y'.repeat(3000) });
    await until(() => r.events.length === 20 && sub.state.big[0] === 'y', 5000, 'events');
    assert.deepEqual(names(r), Array.from({ length: 20 }, (_, i) => `z${i + 1}`));
    assertOnceInOrder(r);
    assert.ok(spy.binary >= 2, `binary frames: ${spy.binary}`);
    assert.ok(new URL(spy.sockets[0].url).searchParams.get('compress') === 'deflate');
    assert.deepEqual(r.errors, []);
  });

  test('an ended campaign stops the subscription (1000) after its last frame', async () => {
    const c = await node.createCampaign('ending');
    const sub = open('ending');
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    await node.publish(c.id, 'last');
    await node.end(c.id);
    await until(() => sub.status === 'stopped', 5000, 'stopped');
    assert.deepEqual(r.statuses.at(-1), { status: 'stopped', code: 1000, reason: 'campaign ended' });
    assert.deepEqual(names(r), ['last']);
  });

  test('an unknown campaign stops the subscription (404 → 4404)', async () => {
    const sub = open('no-such-campaign');
    const r = record(sub);
    await until(() => sub.status === 'stopped', 5000, 'stopped');
    assert.equal(r.statuses.at(-1).code, 4404);
  });

  test('a bad user id stops it (400 → 4400)', async () => {
    await node.createCampaign('baduser');
    const sub = open('baduser', { user: 'x'.repeat(200) });
    const r = record(sub);
    await until(() => sub.status === 'stopped', 5000, 'stopped');
    assert.equal(r.statuses.at(-1).code, 4400);
  });
});

describe('across node restarts', { skip: skipReason }, () => {
  let node;
  let sub;
  before(async () => {
    node = await new Node(['--dev']).start();
  });
  after(async () => {
    sub?.close();
    await node?.dispose();
  });

  test('every event once and in order; state resynced after recovered:false', async () => {
    const c = await node.createCampaign('restart');
    await node.setState(c.id, { phase: 1 });
    sub = connect(node.base, 'restart', { user: 'u1', WebSocket, backoff: fast });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    const expected = [];
    const publish = async (prefix, n) => {
      for (let i = 1; i <= n; i++) {
        await node.publish(c.id, `${prefix}${i}`);
        expected.push(`${prefix}${i}`);
      }
    };
    await publish('a', 5);
    await until(() => r.events.length === expected.length, 5000, 'a events');
    for (const [signal, phase] of [
      ['SIGKILL', 2],
      ['SIGTERM', 3],
    ]) {
      const lives = r.statuses.filter((s) => s.status === 'live').length;
      await node.stop(signal);
      await until(() => sub.status === 'connecting', 5000, `the drop (${signal})`);
      await node.start();
      await until(() => r.statuses.filter((s) => s.status === 'live').length > lives, 10000, `live again (${signal})`);
      // The node numbers on across the restart and cannot replay: a resync.
      assert.equal(sub.welcome.recovered, false);
      assert.ok(r.statuses.slice(-2)[0].status === 'resyncing', JSON.stringify(r.statuses.slice(-3)));
      await node.setState(c.id, { phase });
      await publish(signal === 'SIGKILL' ? 'b' : 'c', 5);
      await until(() => r.events.length === expected.length && sub.state?.phase === phase, 5000, `events after ${signal}`);
    }
    assert.deepEqual(names(r), expected);
    assertOnceInOrder(r);
    assert.deepEqual(r.states.map((s) => s.phase).filter((p, i, a) => p !== a[i - 1]), [1, 2, 3]);
    const codes = r.statuses.filter((s) => s.status === 'connecting' && s.code).map((s) => s.code);
    assert.ok(codes.includes(1006), `closes: ${codes}`); // killed
    assert.ok(codes.includes(1001), `closes: ${codes}`); // shut down
  });
});

describe('against a node with authentication', { skip: skipReason }, () => {
  const password = 'admin-password-for-tests';
  let node;
  const subs = [];
  const open = (campaign, options) => {
    const sub = connect(node.base, campaign, { WebSocket, backoff: fast, ...options });
    subs.push(sub);
    return sub;
  };
  before(async () => {
    node = await new Node(['--admin-password', password, '--access-token-ttl', '6s']).start();
    await node.login('admin', password);
    await node.createCampaign('private');
  });
  after(async () => {
    subs.forEach((s) => s.close());
    await node?.dispose();
  });

  const login = async () => (await node.login('admin', password)).access_token;

  test('401 (bad token) → 4401 → getToken → connected as the token’s subject', async () => {
    const sub0 = decodeJwt(await login()).sub;
    // A token that looks valid (subject, exp in an hour) but whose signature is not the node's.
    const forged = jwt({ sub: sub0, exp: Math.floor(Date.now() / 1000) + 3600 });
    let calls = 0;
    const sub = open('private', { token: forged, getToken: () => (calls++, login()) });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    assert.equal(calls, 1);
    assert.equal(sub.welcome.user, sub0);
    // The node closes a refused upgrade with 4401 and says why (older nodes answered HTTP 401,
    // which the client reports as 'unauthenticated').
    assert.ok(r.statuses[1].reason, 'the reconnection says why');
    assert.deepEqual(r.statuses.map((s) => s.status), ['connecting', 'connecting', 'live']);
    // The token went in the first frame, not in the URL.
    assert.equal(new URL(sub._ws.url).searchParams.get('token'), null);
    assert.equal(new URL(sub._ws.url).pathname, '/ws/private');
  });

  test('without getToken a 401 stops it', async () => {
    const sub = open('private', { user: 'u1' });
    const r = record(sub);
    // With no token in the URL the node waits 5 s for an auth frame, then closes with 4401.
    await until(() => sub.status === 'stopped', 10000, 'stopped');
    const last = r.statuses.at(-1);
    assert.equal(last.status, 'stopped');
    assert.equal(last.code, 4401);
    assert.ok(last.reason, 'a reason is given');
  });

  test('another user’s stream is forbidden (403 → 4403)', async () => {
    await node.request('POST', '/api/auth/register', { username: 'viewer1', email: 'viewer1@example.com', password: 'viewer-password' }, null);
    const t = await node.request('POST', '/api/auth/login', { login: 'viewer1', password: 'viewer-password' }, null);
    const sub = open('private', { token: t.access_token, user: 'someone-else' });
    const r = record(sub);
    await until(() => sub.status === 'stopped', 5000, 'stopped');
    assert.equal(r.statuses.at(-1).code, 4403);
  });

  test('a new token before exp keeps the stream going past the first token’s exp', async (t) => {
    let calls = 0;
    const sub = open('private', { getToken: () => (calls++, login()) });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    const firstExp = decodeJwt(sub._token).exp * 1000;
    const id = sub.welcome.campaign;
    await node.publish(id, 'before');
    // 6 s tokens: a new one about 3 s before exp.
    await until(() => calls >= 2, 6000, 'a second getToken');
    // Past the first token's expiry (a node closes a session whose token expired with 4401).
    await new Promise((done) => setTimeout(done, Math.max(0, firstExp - Date.now()) + 1500));
    await until(() => sub.status === 'live', 5000, 'live after the refresh');
    await node.publish(id, 'after');
    await until(() => r.events.length === 2, 5000, 'events');
    assert.deepEqual(names(r), ['before', 'after']);
    const fellBack = r.statuses.some((s) => s.reason === 'token refresh');
    // unknown_type: a node without `refresh` (the client then reconnects with the new token).
    assert.deepEqual(r.errors.map((e) => e.code), fellBack ? ['unknown_type'] : []);
    const closes = r.statuses.filter((s) => s.status === 'connecting').length - 1;
    if (fellBack) {
      t.diagnostic('the node answered refresh with unknown_type: the client reconnected with the new token');
    } else {
      // The node took the refresh frame: the same session, never closed.
      assert.equal(closes, 0, JSON.stringify(r.statuses));
      t.diagnostic('the node accepted the refresh frame: one session throughout');
    }
  });
});

const redisUrl = process.env.OVASABI_TEST_REDIS_URL;
describe('two nodes sharing Redis', { skip: skipReason || (!redisUrl && 'OVASABI_TEST_REDIS_URL is not set: the resume across nodes did not run') }, () => {
  let a, b;
  const subs = [];
  // A key prefix of this run's own, deleted afterwards.
  const prefix = `ovasabi-js-${process.pid}-${Date.now()}`;
  before(async () => {
    a = await new Node(['--dev', '--redis-url', redisUrl, '--redis-prefix', prefix]).start();
    b = await new Node(['--dev', '--redis-url', redisUrl, '--redis-prefix', prefix, '--database-url', `sqlite://${a.dir}/ovasabi.db`]).start();
  });
  after(async () => {
    subs.forEach((s) => s.close());
    await b?.dispose();
    await a?.dispose();
    const { execFileSync } = await import('node:child_process');
    try {
      const url = new URL(redisUrl);
      const cli = ['-h', url.hostname, '-p', url.port || '6379'];
      const keys = execFileSync('redis-cli', [...cli, '--scan', '--pattern', `${prefix}*`], { encoding: 'utf8' }).split('\n').filter(Boolean);
      if (keys.length) execFileSync('redis-cli', [...cli, 'del', ...keys]);
    } catch {}
  });

  test('a subscription resumed on the other node gets what was published meanwhile, once and in order', async () => {
    const c = await a.createCampaign('across');
    const first = connect(a.base, 'across', { user: 'u1', WebSocket, backoff: fast });
    subs.push(first);
    const r1 = record(first);
    await until(() => first.status === 'live', 5000, 'live on A');
    for (let i = 1; i <= 3; i++) await a.publish(c.id, `a${i}`);
    await until(() => r1.events.length === 3, 5000, 'three events on A');
    const { seq, epoch } = first;
    first.close();
    for (let i = 1; i <= 3; i++) await b.publish(c.id, `b${i}`);
    const second = connect(b.base, 'across', { user: 'u1', WebSocket, backoff: fast, since: seq, epoch });
    subs.push(second);
    const r2 = record(second);
    await until(() => second.status === 'live' && r2.events.length === 3, 5000, 'the missed events on B');
    assert.equal(second.welcome.recovered, true);
    assert.equal(second.welcome.epoch, epoch, 'one epoch across the cluster');
    await a.publish(c.id, 'a4'); // published on A, delivered by B
    await until(() => r2.events.length === 4, 5000, 'a live event from A');
    assert.deepEqual(names(r2), ['b1', 'b2', 'b3', 'a4']);
    assert.deepEqual(r2.events.map((e) => e.seq), [seq + 1, seq + 2, seq + 3, seq + 4]);
    assert.deepEqual(r2.errors, []);
  });
});

describe('frames lost by a slow reader', { skip: skipReason }, () => {
  let node;
  before(async () => {
    node = await new Node(['--dev', '--send-queue-capacity', '4']).start();
  });
  after(async () => {
    await node?.dispose();
  });

  test('a seq gap (frames dropped while the client did not read) is filled by a resume', async () => {
    const c = await node.createCampaign('gaps');
    const spy = spyWebSocket();
    const sub = connect(node.base, 'gaps', { user: 'u1', WebSocket: spy.WS, backoff: fast });
    const r = record(sub);
    await until(() => sub.status === 'live', 5000, 'live');
    // Stop reading: the kernel's buffers fill, then the node's queue of 4, then it drops.
    spy.sockets[0]._socket.pause();
    // 16 KB events: about 6 MB in all, more than loopback buffers hold, while what is lost
    // stays under the 4 MiB a recovery may carry.
    const big = 'x'.repeat(16 * 1024);
    const n = 401;
    for (let i = 1; i < n; i++) await node.publish(c.id, `e${i}`, { i, big });
    const stats = await node.request('GET', `/api/campaigns/${c.id}/stats`);
    assert.ok(stats.frames_dropped > 0, `frames were dropped: ${JSON.stringify(stats)}`);
    spy.sockets[0]._socket.resume();
    // The next event shows the client the hole in the seqs.
    await until(() => r.events.length >= n - 1 - stats.frames_dropped, 20000, 'the frames that were kept');
    await node.publish(c.id, `e${n}`, { i: n, big });
    await until(() => r.events.length === n, 20000, 'every event, the lost ones by a resume').catch((e) => {
      throw new Error(`${e.message}: ${r.events.length} events, errors ${JSON.stringify(r.errors.map((x) => x.code))}, statuses ${JSON.stringify(r.statuses.map((x) => [x.status, x.reason, x.recovered]))}, last ${r.events.at(-1)?.seq}`);
    });
    assert.ok(r.errors.some((e) => e.code === 'gap'), 'the client saw the gap');
    assert.ok(spy.sockets.length >= 2, 'and resumed on a new connection');
    assert.deepEqual(r.events.map((e) => e.data.i), Array.from({ length: n }, (_, k) => k + 1));
    sub.close();
  });
});
