// Test doubles: a scripted WebSocket class and a manual clock, so that the client's frame
// handling, close-code policy, back-off and timers can be driven step by step.

/** A manual clock: timers run only when `advance` passes them. */
export class FakeTimers {
  constructor() {
    this.t = 1_000_000;
    this.queue = new Map();
    this.id = 0;
  }
  now = () => this.t;
  setTimeout = (fn, ms) => {
    const id = ++this.id;
    this.queue.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (id) => {
    this.queue.delete(id);
  };
  /** The delay of the next timer due, or undefined. */
  next() {
    let best;
    for (const { at } of this.queue.values()) if (best === undefined || at < best) best = at;
    return best === undefined ? undefined : best - this.t;
  }
  /** Moves the clock by `ms`, running what falls due (and what those schedule) in order. */
  async advance(ms) {
    await flush();
    const end = this.t + ms;
    for (;;) {
      let due;
      for (const [id, e] of this.queue) if (e.at <= end && (!due || e.at < due[1].at)) due = [id, e];
      if (!due) break;
      this.queue.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

/** Lets pending promise callbacks (and a few event-loop turns) run. */
export async function flush(turns = 5) {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

/** A scripted WebSocket: the test opens it, sends it frames and closes it from the server side. */
export function fakeWebSocket() {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedBy = null;
      sockets.push(this);
    }
    get query() {
      return Object.fromEntries(new URL(this.url).searchParams);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedBy = { code, reason };
      this.readyState = 3;
      // As a real socket would: the close event comes later.
      setImmediate(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? '' }));
    }
    // Server side:
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    frame(f) {
      this.onmessage?.({ data: typeof f === 'string' || f instanceof ArrayBuffer ? f : JSON.stringify(f) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    /** Like `ws` when the upgrade is answered with an HTTP status. */
    httpRefuse(status) {
      this.onerror?.({ message: `Unexpected server response: ${status}` });
      this.serverClose(1006);
    }
  }
  return { FakeWS, sockets, last: () => sockets[sockets.length - 1] };
}

/** An unsigned JWT with `payload` (the client never verifies tokens). */
export function jwt(payload) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.c2ln`;
}
