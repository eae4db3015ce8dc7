// Type declarations of @ovasabi/client (hand-written; the code is src/index.js).
// Wire protocol: docs/protocol.md of the OVASABI engine.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One campaign event, as a tick carries it. `seq` counts the campaign's events from 1. */
export interface CampaignEvent {
  seq: number;
  name: string;
  data: Json;
  /** Milliseconds since the Unix epoch, at the server. */
  ts: number;
  /** Set on events sent by clients (`publish`). */
  user?: string;
}

export interface WelcomeFrame {
  type: 'welcome';
  campaign: string;
  user: string;
  node: string;
  /** The latest event already broadcast: the next tick's events follow it. */
  seq: number;
  epoch?: string;
  frequency_hz: number;
  /** Only when resuming with `since`: whether the missed events follow. */
  recovered?: boolean;
}

export interface TickFrame {
  type: 'tick';
  campaign: string;
  seq: number;
  ts: number;
  /** Present when the state changed since this client's last frame. */
  state?: Record<string, Json>;
  events?: CampaignEvent[];
  /** With the campaign feature `presence`: sessions connected on every node. */
  connections?: number;
}

/** A direct message addressed to this user (`{"type":"message",...}`); it takes no `seq` of its own. */
export interface MessageFrame {
  type: 'message';
  /** The campaign's latest event `seq` when it was sent. */
  seq: number;
  name: string;
  data: Json;
  ts: number;
}

/** `{"type":"notification",...}` frames (reserved for the notification service). */
export interface NotificationFrame {
  type: 'notification';
  [key: string]: unknown;
}

/**
 * A server `error` frame (`rate_limited`, `invalid_event`, `forbidden`, `unknown_type`, ...; the
 * session stays open), or one of the client's own: `gap` (a seq gap, being repaired by a
 * resume), `state_gap` (a `state_patch` not on top of the state held: reconnects for the whole
 * state), `bad_frame` (a frame that could not be decoded), `get_token_failed`.
 */
export interface ErrorFrame {
  type: 'error';
  code: string;
  message: string;
}

export type Status = 'connecting' | 'live' | 'resyncing' | 'stopped';

/**
 * `connecting`: opening a socket, or waiting `delay` ms before the next try (after a close with
 * `code`/`reason`). `resyncing`: the node could not replay the missed events (`recovered:
 * false`); the next tick's state replaces the client's. `live`: the state is current and events
 * flow. `stopped`: for good, with `code` and `reason` (1000 campaign ended, 4400 bad request,
 * 4401 unauthenticated without `getToken`, 4403 forbidden, 4404 unknown or inactive campaign,
 * or `close()`: 1000 "closed").
 */
export interface StatusChange {
  status: Status;
  code?: number;
  reason?: string;
  /** Milliseconds until the next connection attempt. */
  delay?: number;
}

export interface SubscriptionEvents {
  /** The campaign's state after every change (it replaces the previous one). */
  state: (state: Record<string, Json>) => void;
  /** Each event once, in `seq` order, across reconnects. */
  event: (event: CampaignEvent) => void;
  message: (message: MessageFrame) => void;
  notification: (notification: NotificationFrame) => void;
  status: (change: StatusChange) => void;
  error: (error: ErrorFrame) => void;
}

/** What the client uses of a WebSocket (the browser's, `ws`'s, undici's). */
export interface WebSocketLike {
  readyState: number;
  binaryType: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
}
/** A WebSocket constructor whose instances are `WebSocketLike` (typed loosely, so that the browser's, `ws`'s and undici's classes fit). */
export type WebSocketClass = new (url: string) => unknown;

/** Timers and clock, injectable for tests. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface ConnectOptions {
  /**
   * An access token (JWT). Sent in the first frame (`{"type":"auth","token":...}`, kept out of
   * proxies' logs) on `/ws/{campaign}`, or as `?token=` when `user` is another user than the
   * token's subject or `tokenIn` is `'query'`.
   */
  token?: string;
  /**
   * Ask for delta state frames (`?delta=1`): a changed state arrives as a merge patch of the
   * one before, applied by the client (`state` listeners still get the whole state).
   */
  delta?: boolean;
  /** Where the token goes: `'frame'` (default) or `'query'`. */
  tokenIn?: 'frame' | 'query';
  /**
   * Returns a new access token: called when there is none, on close 4401, and shortly before
   * the token's `exp` (the new one is handed to the open session, or used to reconnect).
   */
  getToken?: () => string | Promise<string>;
  /** The watching user; by default the token's `sub` (`/ws/{campaign}`). */
  user?: string;
  /** Ask for compressed tick frames (`compress=deflate`). */
  compress?: boolean;
  /** Resume after this event `seq` (events up to it are not delivered). */
  since?: number;
  /** The epoch of the welcome in which `since` was seen. */
  epoch?: string;
  /** The WebSocket class, where there is no global one (Node: `import { WebSocket } from 'ws'`). */
  WebSocket?: WebSocketClass;
  /** Milliseconds without any frame before the socket is taken for dead (default 75000); a ping is sent at half. */
  idleTimeout?: number;
  /** Ask for a new token this long before the token's `exp` (default 60000 ms; at most half its remaining life). */
  refreshBefore?: number;
  /** Reconnection back-off: full jitter in [0, min(maxDelay, initialDelay·2^attempt)). */
  backoff?: { initialDelay?: number; maxDelay?: number; resetAfter?: number };
  /** For tests. */
  timers?: Timers;
  /** For tests: a source of numbers in [0, 1). */
  random?: () => number;
}

export declare class Subscription {
  constructor(url: string, campaign: string, options?: ConnectOptions);
  /** The campaign as given (id or slug). */
  readonly campaign: string;
  /** The last state received. */
  readonly state: Record<string, Json> | undefined;
  /** The last event `seq` delivered, or the welcome's after a (re)sync; `null` before the first welcome. */
  readonly seq: number | null;
  /** The epoch of the last welcome. */
  readonly epoch: string | null;
  readonly status: Status;
  /** The campaign's tick rate, from the welcome and `config` frames. */
  readonly frequency: number | null;
  /** The last presence count (campaigns with the `presence` feature). */
  readonly connections: number | undefined;
  /** The last welcome frame. */
  readonly welcome: WelcomeFrame | null;
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof SubscriptionEvents>(type: K, listener: SubscriptionEvents[K]): () => void;
  off<K extends keyof SubscriptionEvents>(type: K, listener: SubscriptionEvents[K]): void;
  /** Sends a client event; `false` when the socket is not open (nothing is queued). */
  publish(name: string, data?: Json): boolean;
  /** Stops for good: status `stopped`, reason `closed`. */
  close(): void;
}

/**
 * Opens a campaign's live stream. `url` is the node's base URL (`http://host:8090`,
 * `https://...`, `ws://...`); `campaign` its id or slug.
 */
export declare function connect(url: string, campaign: string, options?: ConnectOptions): Subscription;

/** The payload of a JWT, decoded without verification; `null` if it is not one. */
export declare function decodeJwt(token: string): Record<string, any> | null;
/** `target` with the JSON merge patch (RFC 7396) `patch` applied, as a new value. */
export declare function mergePatch(target: unknown, patch: unknown): unknown;

/** The back-off delay (ms) of a 0-based attempt. */
export declare function backoffDelay(
  attempt: number,
  options?: { initialDelay?: number; maxDelay?: number },
  random?: () => number,
): number;

/** The WebSocket URL of a campaign stream (`null`/`undefined` query values are left out). */
export declare function streamUrl(
  base: string,
  campaign: string,
  user?: string | null,
  query?: Record<string, string | number | null | undefined>,
): string;
