// A campaign's page (`#/campaigns/{id}`): its live stream through the official client
// (`/console/client.js`: reconnect, resume, token refresh are the client's), the node's figures
// (`GET .../stats`, every 2 s) and charts (`GET .../stats/history`, or the page's own samples
// of /stats where the node has no history), the frequency slider, publishing, the state
// editor, the settings form, and ending the campaign.

import { connect } from './client.js';
import { api, seg, session } from './api.js';
import { campaigns, campaignForm, campaignList, frequencyOf } from './campaigns.js';
import { LineChart } from './chart.js';
import { h, fill, field, messenger, num, hz, pct, clock, when, jsonInput, uid, confirmDialog, announce } from './dom.js';

const STATS_MS = 2000;
const WINDOW_MS = 15 * 60e3;
const MAX_EVENTS = 500;
const MAX_FRAMES = 40;
/** The slider's stops (Hz); the number field takes any value in 0.1–100. */
export const STOPS = [0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100];

const nearestStop = (f) => STOPS.reduce((best, s, i) => (Math.abs(Math.log(s / f)) < Math.abs(Math.log(STOPS[best] / f)) ? i : best), 0);

/** `#/campaigns/{id}`. */
export function campaignView(main, [, idParam]) {
  const id = decodeURIComponent(idParam);
  let disposed = false;
  const cleanups = [];
  const later = (fn, ms) => {
    const t = setTimeout(() => !disposed && fn(), ms);
    cleanups.push(() => clearTimeout(t));
  };

  const side = campaignList({ compact: true, currentId: id });
  cleanups.push(side.dispose);
  const body = h('div', { class: 'campaign-main' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(main, h('div', { class: 'with-side' }, h('aside', { class: 'side', 'aria-label': 'Campaigns' }, side.el), body));

  (async () => {
    let c;
    try {
      c = await api('GET', `/api/campaigns/${seg(id)}`);
    } catch (e) {
      if (disposed) return;
      const say = messenger();
      say.error(e);
      fill(body, h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/campaigns' }, '← Campaigns')), h('h1', { tabindex: '-1' }, id), say.el);
      return;
    }
    if (disposed) return;
    cleanups.push(render(body, c, later, () => disposed));
  })();

  return () => {
    disposed = true;
    for (const f of cleanups.splice(0)) f();
  };
}

function render(body, campaign, later, isDisposed) {
  let c = campaign;
  const id = c.id;
  const path = `/api/campaigns/${seg(id)}`;
  const dispose = [];

  // ---- header
  const title = h('h1', { tabindex: '-1' }, c.name);
  const badge = h('span', { class: `badge status-${c.status}`, dataset: { role: 'campaign-status' } }, c.status);
  const headMsg = messenger();
  const endBtn = h('button', { type: 'button', class: 'danger' }, 'End campaign…');
  const startBtn = h('button', { type: 'button' }, 'Start now');
  const headInfo = h('p', { class: 'muted ids' });
  const showHead = () => {
    title.textContent = c.name;
    badge.textContent = c.status;
    badge.className = `badge status-${c.status}`;
    fill(headInfo, 'slug ', h('code', {}, c.slug), ' · id ', h('code', {}, c.id), c.starts_at ? ` · starts ${when(c.starts_at)}` : '', c.ends_at ? ` · ends ${when(c.ends_at)}` : '');
    endBtn.hidden = c.status === 'ended';
    startBtn.hidden = c.status !== 'draft';
    for (const el of [slider, exact, publishBtn, mergeBtn, replaceBtn]) el.disabled = c.status === 'ended';
  };

  // ---- live
  const connDot = h('span', { class: 'dot', 'aria-hidden': 'true' });
  const connText = h('span', { id: uid('conn'), dataset: { role: 'client-status' } }, 'not connected');
  const figures = {};
  const fig = (key, label) => {
    figures[key] = h('dd', { dataset: { figure: key } }, '–');
    return h('div', { class: 'figure' }, h('dt', {}, label), figures[key]);
  };
  const figList = h(
    'dl',
    { class: 'figures' },
    fig('frequency_hz', 'Configured'),
    fig('tick_rate_hz', 'Measured tick rate'),
    fig('connections_node', 'Connections, this node'),
    fig('connections_cluster', 'Connections, cluster'),
    fig('frames_sent', 'Frames sent'),
    fig('frames_dropped', 'Frames dropped'),
    fig('drop_rate', 'Drop rate'),
    fig('seq', 'Seq (node)'),
  );
  figures.node = h('b', { dataset: { figure: 'node' } }, '–');
  const statsMsg = messenger('msg small');
  const presence = h('p', { class: 'presence', hidden: true });
  const charts = {
    connections: new LineChart({
      title: 'Connections',
      series: [
        { key: 'connections', name: 'this node' },
        { key: 'cluster_connections', name: 'cluster' },
      ],
    }),
    frames: new LineChart({
      title: 'Frames per second',
      series: [
        { key: 'frames_per_s', name: 'frames/s' },
        { key: 'events_per_s', name: 'events/s' },
      ],
    }),
    drops: new LineChart({ title: 'Dropped frames per second', series: [{ key: 'dropped_per_s', name: 'dropped/s' }] }),
    rate: new LineChart({
      title: 'Tick rate (Hz)',
      series: [
        { key: 'tick_rate_hz', name: 'measured' },
        { key: 'frequency_hz', name: 'configured' },
      ],
    }),
  };
  dispose.push(() => Object.values(charts).forEach((ch) => ch.dispose()));
  const chartNote = h('p', { class: 'muted small' });

  // ---- frequency
  const freqId = uid('freq');
  const slider = h('input', { type: 'range', id: freqId, min: '0', max: String(STOPS.length - 1), step: '1', value: String(nearestStop(frequencyOf(c))) });
  const sliderOut = h('output', { for: freqId, class: 'freq-out' });
  const exact = h('input', { type: 'number', min: '0.1', max: '100', step: 'any', value: String(frequencyOf(c)) });
  const freqMsg = messenger('msg small');
  let freqTimer = 0;
  let freqBusy = false;
  const showSlider = () => {
    const v = STOPS[Number(slider.value)];
    sliderOut.textContent = hz(v);
    slider.setAttribute('aria-valuetext', hz(v));
  };
  const applyFrequency = async (value) => {
    clearTimeout(freqTimer);
    freqTimer = 0;
    freqBusy = true;
    freqMsg(`Setting ${hz(value)}…`);
    try {
      c = await api('PATCH', path, { metadata: { scheduling: { frequency: value } } });
      freqMsg(`Configured ${hz(frequencyOf(c))}: applies within one tick.`);
      exact.value = String(frequencyOf(c));
      campaigns.poke();
      pollStats();
    } catch (e) {
      freqMsg.error(e);
    } finally {
      freqBusy = false;
    }
  };
  slider.addEventListener('input', () => {
    showSlider();
    clearTimeout(freqTimer);
    freqTimer = setTimeout(() => applyFrequency(STOPS[Number(slider.value)]), 300);
  });
  exact.addEventListener('change', () => {
    const v = Number(exact.value);
    if (!(v >= 0.1 && v <= 100)) return freqMsg.error('the frequency must be 0.1–100 Hz');
    slider.value = String(nearestStop(v));
    showSlider();
    applyFrequency(v);
  });
  dispose.push(() => clearTimeout(freqTimer));
  showSlider();

  // ---- publish
  const evName = h('input', { name: 'event-name', required: true, value: 'score', autocomplete: 'off', maxlength: '128' });
  const evData = h('textarea', { name: 'event-data', rows: '3', class: 'code' });
  evData.value = '{"points": 1}';
  const evJson = jsonInput(evData, { emptyAs: null });
  const evNow = h('input', { type: 'checkbox', name: 'immediate', id: uid('now') });
  const publishBtn = h('button', { type: 'submit' }, 'Publish');
  const pubMsg = messenger();
  const pubForm = h(
    'form',
    { class: 'form', novalidate: true },
    field('Event name', evName),
    field('Data (JSON)', evData),
    evJson.msg,
    h('div', { class: 'check' }, evNow, h('label', { for: evNow.id }, 'Immediate: send a tick now instead of at the next scheduled one')),
    h('div', { class: 'row' }, publishBtn),
    pubMsg.el,
  );
  pubForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    pubMsg.clear();
    if (!evName.value.trim()) return pubMsg.error('an event name is required');
    const d = evJson.check();
    if (!d.ok) return evData.focus();
    publishBtn.disabled = true;
    try {
      const r = await api('POST', `${path}/events`, { name: evName.value.trim(), data: d.value, immediate: evNow.checked });
      pubMsg(`Published ${evName.value.trim()}: seq ${r.seq}.`);
    } catch (e) {
      pubMsg.error(e);
    } finally {
      publishBtn.disabled = c.status === 'ended';
    }
  });

  // ---- state
  const statePre = h('pre', { class: 'code state', tabindex: '0', 'aria-label': 'Current state', dataset: { role: 'live-state' } });
  const stateSrc = h('small', { class: 'muted' });
  const stateText = h('textarea', { rows: '6', class: 'code', name: 'state-editor' });
  const stateJson = jsonInput(stateText, { object: true });
  const mergeBtn = h('button', { type: 'submit', value: 'merge' }, 'Merge (PATCH)');
  const replaceBtn = h('button', { type: 'submit', value: 'replace', class: 'secondary' }, 'Replace (PUT)');
  const copyBtn = h('button', { type: 'button', class: 'secondary' }, 'Edit current state');
  const stateMsg = messenger();
  let lastState = c.state;
  const showState = (st, src) => {
    lastState = st;
    statePre.textContent = JSON.stringify(st, null, 2);
    stateSrc.textContent = src;
  };
  showState(c.state, 'as stored (the live stream updates it)');
  stateText.value = JSON.stringify(c.state ?? {}, null, 2);
  copyBtn.addEventListener('click', () => {
    stateText.value = JSON.stringify(lastState ?? {}, null, 2);
    stateJson.check();
    stateText.focus();
  });
  const stateForm = h(
    'form',
    { class: 'form', novalidate: true },
    field('New state or merge patch (JSON object)', stateText, 'Merge: keys are merged in, null removes a key (RFC 7396). Replace: the object becomes the state.'),
    stateJson.msg,
    h('div', { class: 'row' }, mergeBtn, replaceBtn, copyBtn),
    stateMsg.el,
  );
  stateForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    stateMsg.clear();
    const r = stateJson.check();
    if (!r.ok) return stateText.focus();
    const replace = ev.submitter?.value === 'replace';
    try {
      const st = await api(replace ? 'PUT' : 'PATCH', `${path}/state`, r.value);
      stateMsg(replace ? 'State replaced: it goes out with the next tick.' : 'State merged: it goes out with the next tick.');
      if (!sub) showState(st, 'as stored');
    } catch (e) {
      stateMsg.error(e);
    }
  });

  // ---- events and frames
  const eventsList = h('ol', { class: 'log events', reversed: true, 'aria-label': 'Events, newest first', dataset: { role: 'events' } });
  const framesList = h('ol', { class: 'log frames', reversed: true, 'aria-label': 'Frames, newest first' });
  const lastFrame = h('pre', { class: 'code frame', tabindex: '0', 'aria-label': 'Last frame' });
  const seqSeen = h('span', { dataset: { role: 'client-seq' } }, '–');
  const counts = h('span', {});
  let nEvents = 0;
  let nFrames = 0;
  let pending = [];
  let pendingFrames = [];
  let flushT = 0;
  const flush = () => {
    flushT = 0;
    if (pending.length) {
      eventsList.prepend(...pending.reverse().map(eventItem));
      pending = [];
      while (eventsList.children.length > MAX_EVENTS) eventsList.lastChild.remove();
    }
    if (pendingFrames.length) {
      framesList.prepend(...pendingFrames.slice(-MAX_FRAMES).reverse().map(frameItem));
      lastFrame.textContent = pendingFrames[pendingFrames.length - 1].text;
      pendingFrames = [];
      while (framesList.children.length > MAX_FRAMES) framesList.lastChild.remove();
    }
    counts.textContent = `${num(nEvents)} events, ${num(nFrames)} frames received by this page`;
    seqSeen.textContent = sub?.seq ?? '–';
  };
  const soon = () => (flushT ||= setTimeout(flush, 60));
  dispose.push(() => clearTimeout(flushT));

  // ---- settings
  const settingsBox = h('div', {});
  const showSettings = () =>
    fill(
      settingsBox,
      campaignForm(c, (out) => {
        c = out;
        showHead();
        showSettings();
        campaigns.poke();
      }).el,
    );

  const section = (heading, cls, ...kids) => {
    const hid = uid('h');
    return h('section', { class: `panel ${cls}`, 'aria-labelledby': hid }, h('h2', { id: hid }, heading), ...kids);
  };
  fill(
    body,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/campaigns' }, '← Campaigns')),
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, badge), h('div', { class: 'row' }, startBtn, endBtn)),
    headInfo,
    headMsg.el,
    h(
      'div',
      { class: 'campaign-grid' },
      h(
        'div',
        { class: 'col-main' },
        section(
          'Live',
          'live',
          h('p', { class: 'conn' }, connDot, h('span', { class: 'sr-only' }, 'Stream: '), h('span', { role: 'status', 'aria-live': 'polite' }, connText), ' · node ', figures.node, ' · last seq seen ', seqSeen),
          figList,
          statsMsg.el,
          presence,
          h('div', { class: 'charts' }, Object.values(charts).map((ch) => ch.el)),
          chartNote,
        ),
        section('Events', 'events-panel', h('p', { class: 'muted small' }, counts), eventsList),
        section('Frames', 'frames-panel', framesList, h('details', {}, h('summary', {}, 'Last frame'), lastFrame)),
      ),
      h(
        'div',
        { class: 'col-side' },
        section('Frequency', 'frequency', h('div', { class: 'field' }, h('label', { for: freqId }, 'Broadcast frequency'), h('div', { class: 'slider-row' }, slider, sliderOut)), field('Exact value (Hz)', exact), freqMsg.el),
        section('Publish an event', 'publish', pubForm),
        section('State', 'state-panel', statePre, stateSrc, stateForm),
        section('Settings', 'settings', settingsBox),
      ),
    ),
  );
  showHead();
  showSettings();

  // ---- actions
  endBtn.addEventListener('click', async () => {
    const ok = await confirmDialog(`End ${c.name}?`, 'Its clients get a final frame and are disconnected; an ended campaign cannot be started again.', 'End campaign');
    if (!ok) return endBtn.focus();
    headMsg.clear();
    try {
      c = await api('DELETE', path);
      headMsg('The campaign has ended.');
      announce('Campaign ended');
      showHead();
      showSettings();
      campaigns.poke();
      pollStats();
    } catch (e) {
      headMsg.error(e);
    }
  });
  startBtn.addEventListener('click', async () => {
    headMsg.clear();
    try {
      c = await api('PATCH', path, { status: 'active' });
      headMsg('The campaign is active.');
      showHead();
      showSettings();
      campaigns.poke();
      ensureStream();
    } catch (e) {
      headMsg.error(e);
    }
  });

  // ---- the stream, on the official client
  let sub = null;
  const ensureStream = () => {
    if (sub || c.status !== 'active' || isDisposed()) return;
    sub = openStream();
  };
  const openStream = () => {
    // Sees every frame (for the frames log) without taking part in the protocol.
    class TapSocket extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols);
        this.addEventListener('message', (ev) => {
          nFrames++;
          pendingFrames.push(describeFrame(ev.data));
          soon();
        });
      }
    }
    const s = connect(location.origin, id, {
      token: session.data?.access,
      getToken: () => session.token({ fresh: true }),
      WebSocket: TapSocket,
      backoff: { initialDelay: 250, maxDelay: 5000, resetAfter: 30000 },
    });
    s.on('status', (st) => {
      const text = st.status + (st.reason ? `: ${st.reason}` : '') + (st.status === 'connecting' && st.delay != null ? ` (retry in ${(st.delay / 1000).toFixed(1)} s)` : '');
      connText.textContent = text;
      connText.dataset.status = st.status;
      connDot.className = `dot ${st.status}`;
      if (st.status === 'stopped') {
        if (sub === s) sub = null;
        if (st.code === 1000 && st.reason !== 'closed') {
          campaigns.poke();
          pollStats();
        }
      }
    });
    s.on('state', (st) => showState(st, `live, at seq ${s.seq}`));
    s.on('event', (e) => {
      nEvents++;
      pending.push({ kind: 'event', ...e });
      soon();
    });
    for (const type of ['message', 'notification']) {
      s.on(type, (m) => {
        pending.push({ kind: type, ...m });
        soon();
      });
    }
    s.on('error', (e) => {
      pending.push({ kind: 'error', name: e.code, data: e.message, ts: Date.now() });
      soon();
    });
    return s;
  };
  dispose.push(() => sub?.close());
  if (c.status === 'active') ensureStream();
  else {
    connText.textContent = c.status === 'draft' ? 'not live: the campaign is a draft' : 'not live: the campaign has ended';
    connText.dataset.status = 'stopped';
  }

  // ---- figures and charts
  let samples = []; // the page's own, from /stats, where the node has no history
  let history = null; // the node's, from /stats/history
  let historyMode = 'unknown';
  let prev = null;
  const drawCharts = () => {
    const now = Date.now();
    const items = historyMode === 'server' && history ? history.items : samples;
    const note =
      historyMode === 'server' && history
        ? `Node ${history.node}, one point every ${num((history.interval_ms || 5000) / 1000)} s, last 15 minutes.`
        : 'Sampled by this page from /stats every 2 s since it opened (this node keeps no history).';
    chartNote.textContent = note;
    for (const ch of Object.values(charts)) ch.update(items, now);
  };
  async function pollStats() {
    if (isDisposed()) return;
    try {
      const s = await api('GET', `${path}/stats`);
      if (isDisposed()) return;
      statsMsg.clear();
      showFigures(s);
      sample(s);
      if (s.status !== c.status) {
        // Changed elsewhere (another console, the schedule): read it again.
        c = await api('GET', path);
        showHead();
        showSettings();
        campaigns.poke();
        if (c.status === 'active') ensureStream();
      }
      if (!freqBusy && document.activeElement !== slider && document.activeElement !== exact && !freqTimer) syncFrequency(s.frequency_hz);
    } catch (e) {
      if (!isDisposed()) statsMsg.error(e);
    }
  }
  const syncFrequency = (f) => {
    if (Number(exact.value) !== f) exact.value = String(f);
    const i = nearestStop(f);
    if (Number(slider.value) !== i) {
      slider.value = String(i);
      showSlider();
    }
  };
  const showFigures = (s) => {
    const total = s.frames_sent + s.frames_dropped;
    figures.frequency_hz.textContent = hz(s.frequency_hz);
    figures.tick_rate_hz.textContent = hz(s.tick_rate_hz);
    figures.tick_rate_hz.dataset.value = String(s.tick_rate_hz);
    figures.connections_node.textContent = num(s.connections.node);
    figures.connections_cluster.textContent = `${num(s.connections.cluster)} (peak ${num(s.connections.peak)})`;
    figures.frames_sent.textContent = num(s.frames_sent);
    figures.frames_dropped.textContent = num(s.frames_dropped);
    figures.drop_rate.textContent = total ? pct(s.frames_dropped / total) : '–';
    figures.seq.textContent = num(s.seq);
    figures.node.textContent = s.node;
    if (s.users?.length) {
      presence.hidden = false;
      fill(presence, h('b', {}, `Watching now (${s.users.length}${s.users.length >= 100 ? '+' : ''}): `), s.users.join(', '));
    } else presence.hidden = true;
  };
  const sample = (s) => {
    const now = Date.now();
    const point = { at_ms: now, connections: s.connections.node, cluster_connections: s.connections.cluster, tick_rate_hz: s.tick_rate_hz, frequency_hz: s.frequency_hz };
    if (prev && prev.node === s.node && s.frames_sent >= prev.frames_sent) {
      const dt = (now - prev.at) / 1000;
      point.frames_per_s = (s.frames_sent - prev.frames_sent) / dt;
      point.dropped_per_s = (s.frames_dropped - prev.frames_dropped) / dt;
      point.events_per_s = Math.max(0, s.events - prev.events) / dt;
    }
    prev = { at: now, node: s.node, frames_sent: s.frames_sent, frames_dropped: s.frames_dropped, events: s.events };
    samples.push(point);
    samples = samples.filter((p) => p.at_ms >= now - WINDOW_MS);
    drawCharts();
  };
  async function pollHistory() {
    let next = 60e3;
    try {
      history = await api('GET', `${path}/stats/history`);
      historyMode = 'server';
      next = Math.max(2000, history.interval_ms || 5000);
    } catch (e) {
      if (e.status === 404) historyMode = 'local';
      else if (historyMode !== 'server') historyMode = 'local';
      next = historyMode === 'server' ? 5000 : 60e3;
    }
    if (isDisposed()) return;
    drawCharts();
    later(pollHistory, next);
  }
  const statsLoop = async () => {
    await pollStats();
    later(statsLoop, STATS_MS);
  };
  statsLoop();
  pollHistory();
  return () => dispose.forEach((f) => f());
}

function describeFrame(data) {
  const ts = Date.now();
  if (typeof data !== 'string') return { ts, summary: `binary frame, ${data.byteLength ?? data.size} B (compressed)`, text: '(compressed)' };
  let f;
  try {
    f = JSON.parse(data);
  } catch {
    return { ts, summary: `text frame, ${data.length} B`, text: data.slice(0, 4000) };
  }
  const parts = [f.type];
  if (f.seq != null) parts.push(`seq ${f.seq}`);
  if (f.type === 'tick') {
    parts.push(`${(f.events || []).length} event${(f.events || []).length === 1 ? '' : 's'}`);
    if ('state' in f) parts.push('state');
  }
  if (f.type === 'welcome') parts.push(`node ${f.node}`, hz(f.frequency_hz), f.recovered === true ? 'recovered' : f.recovered === false ? 'not recovered' : '');
  if (f.type === 'config') parts.push(hz(f.frequency_hz));
  if (f.type === 'error') parts.push(f.code, f.message);
  parts.push(`${data.length} B`);
  const text = JSON.stringify(f, null, 2);
  return { ts, summary: parts.filter(Boolean).join(' · '), text: text.length > 4000 ? text.slice(0, 4000) + '\n…' : text };
}

function frameItem(f) {
  return h('li', {}, h('time', {}, clock(f.ts)), ' ', f.summary);
}

function eventItem(e) {
  const data = e.data === undefined ? '' : typeof e.data === 'string' && e.kind === 'error' ? e.data : JSON.stringify(e.data);
  return h(
    'li',
    { class: `entry ${e.kind}`, dataset: e.kind === 'event' ? { seq: String(e.seq), name: e.name } : { kind: e.kind } },
    h('span', { class: 'seq' }, e.kind === 'event' ? `#${e.seq}` : e.kind),
    ' ',
    h('b', {}, e.name ?? ''),
    ' ',
    h('code', {}, data.length > 300 ? data.slice(0, 300) + '…' : data),
    ' ',
    e.ts ? h('time', {}, clock(e.ts)) : null,
    e.user ? h('small', {}, ` by ${e.user}`) : null,
  );
}
