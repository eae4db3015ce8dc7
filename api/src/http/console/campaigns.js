// Campaigns: the list grouped by status (kept up to date by polling `GET /api/campaigns`, and
// at once after the console's own changes), the create form and the edit form.

import { api, seg, session } from './api.js';
import { h, fill, field, messenger, hz, when, toLocalInput, fromLocalInput, jsonInput, uid, announce } from './dom.js';

const POLL_MS = 3000;
export const STATUSES = [
  ['active', 'Active'],
  ['draft', 'Draft'],
  ['ended', 'Ended'],
];

export const frequencyOf = (c) => c?.metadata?.scheduling?.frequency ?? 1;

/** Every campaign, polled while someone listens; `poke()` re-reads at once. */
class CampaignStore extends EventTarget {
  constructor() {
    super();
    this.items = null;
    this.error = null;
    this.updatedAt = 0;
    this._users = 0;
    this._timer = 0;
    this._busy = null;
  }

  /** Calls `fn(store)` on every change until the returned function is called. */
  watch(fn) {
    const l = () => fn(this);
    this.addEventListener('change', l);
    if (this.items || this.error) queueMicrotask(l);
    if (this._users++ === 0) this.poke();
    return () => {
      this.removeEventListener('change', l);
      if (--this._users === 0) clearTimeout(this._timer);
    };
  }

  poke() {
    clearTimeout(this._timer);
    this._busy ||= this._load().finally(() => {
      this._busy = null;
      if (this._users > 0) this._timer = setTimeout(() => this.poke(), POLL_MS);
    });
    return this._busy;
  }

  async _load() {
    if (!session.signedIn) return;
    try {
      const items = [];
      let cursor;
      for (let i = 0; i < 20; i++) {
        const q = new URLSearchParams({ limit: '500' });
        if (cursor) q.set('cursor', cursor);
        const page = await api('GET', `/api/campaigns?${q}`);
        items.push(...page.items);
        cursor = page.next_cursor;
        if (!cursor) break;
      }
      const changed = JSON.stringify(items) !== JSON.stringify(this.items) || this.error;
      this.items = items;
      this.error = null;
      this.updatedAt = Date.now();
      if (changed) this.dispatchEvent(new Event('change'));
    } catch (e) {
      this.error = e;
      this.dispatchEvent(new Event('change'));
    }
  }

  /** The campaigns of a status, newest first, matching `q` (name or slug). */
  of(status, q = '') {
    const needle = q.trim().toLowerCase();
    return (this.items || [])
      .filter((c) => c.status === status && (!needle || c.name.toLowerCase().includes(needle) || c.slug.includes(needle)))
      .sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  }
}

export const campaigns = new CampaignStore();

const canManage = () => session.hasRole('admin') || session.hasRole('campaign_manager');

function statusBadge(status) {
  return h('span', { class: `badge status-${status}` }, status);
}

function card(c, compact, currentId) {
  const meta = [hz(frequencyOf(c))];
  if (c.starts_at) meta.push(`starts ${when(c.starts_at)}`);
  if (c.ends_at) meta.push(`ends ${when(c.ends_at)}`);
  const features = c.metadata?.features || [];
  return h(
    'li',
    { dataset: { id: c.id } },
    h(
      'a',
      { class: 'card', href: `#/campaigns/${seg(c.id)}`, 'aria-current': c.id === currentId ? 'page' : null, dataset: { id: c.id, slug: c.slug } },
      h('span', { class: 'card-name' }, c.name),
      h('span', { class: 'card-meta' }, h('code', {}, c.slug), ' · ', meta.join(' · ')),
      !compact && features.length ? h('span', { class: 'chips' }, features.map((f) => h('span', { class: 'chip' }, f))) : null,
    ),
  );
}

/** The grouped list; `compact` for the side bar of a campaign's page. */
export function campaignList({ compact = false, currentId = null } = {}) {
  const search = h('input', { type: 'search', placeholder: 'Filter by name or slug', autocomplete: 'off' });
  const groups = h('div', { class: compact ? 'groups compact' : 'groups' });
  const updated = h('small', { class: 'muted', 'aria-live': 'off' });
  const error = messenger();
  const root = h(
    'div',
    { class: 'campaign-list' },
    h('div', { class: 'toolbar' }, field('Filter campaigns', search), compact ? null : h('a', { class: 'button', href: '#/campaigns/new' }, 'New campaign')),
    error.el,
    groups,
    updated,
  );
  const render = (store) => {
    if (store.error) error.error(store.error);
    else error.clear();
    if (!store.items) return;
    const focused = document.activeElement?.closest?.('a.card')?.dataset.id;
    fill(
      groups,
      STATUSES.map(([status, label]) => {
        const list = store.of(status, search.value);
        const hid = uid('grp');
        const section = h(
          'section',
          { class: `group group-${status}`, 'aria-labelledby': hid, dataset: { status } },
          h('h2', { id: hid }, label, ' ', h('span', { class: 'count' }, `(${list.length})`)),
          list.length ? h('ul', { class: 'cards' }, list.map((c) => card(c, compact, currentId))) : h('p', { class: 'muted empty' }, status === 'active' ? 'No active campaign.' : `No ${status} campaign.`),
        );
        return section;
      }),
    );
    if (focused) groups.querySelector(`a.card[data-id="${CSS.escape(focused)}"]`)?.focus();
    updated.textContent = `Updated ${new Date(store.updatedAt).toLocaleTimeString()}, every ${POLL_MS / 1000} s.`;
  };
  search.addEventListener('input', () => render(campaigns));
  const stop = campaigns.watch(render);
  return { el: root, dispose: stop };
}

/** `#/campaigns`: every campaign by status. */
export function campaignsView(main) {
  const list = campaignList();
  fill(main, h('div', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Campaigns')), list.el));
  return list.dispose;
}

/** `#/campaigns/new`. */
export function newCampaignView(main) {
  const form = campaignForm(null, (c) => {
    campaigns.poke();
    announce(`Campaign ${c.name} created`);
    location.hash = `#/campaigns/${seg(c.id)}`;
  });
  fill(
    main,
    h(
      'div',
      { class: 'page narrow' },
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/campaigns' }, '← Campaigns')),
      h('h1', { tabindex: '-1' }, 'New campaign'),
      canManage() ? null : h('p', { class: 'note' }, 'Your roles may not allow creating campaigns: the node will say so.'),
      form.el,
    ),
  );
  return () => {};
}

const KNOWN_FEATURES = [['presence', 'Presence: every tick carries the cluster-wide connection count']];

/** RFC 7396 merge patch turning `a` into `b` (objects; arrays and scalars are replaced). */
export function mergeDiff(a, b) {
  const patch = {};
  for (const k of Object.keys(a || {})) if (!(k in b)) patch[k] = null;
  for (const [k, v] of Object.entries(b)) {
    const old = a?.[k];
    if (v && typeof v === 'object' && !Array.isArray(v) && old && typeof old === 'object' && !Array.isArray(old)) {
      const sub = mergeDiff(old, v);
      if (Object.keys(sub).length) patch[k] = sub;
    } else if (JSON.stringify(old) !== JSON.stringify(v)) patch[k] = v;
  }
  return patch;
}

const list = (text) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * The create form (`campaign` null) or the edit form of a campaign: name, slug, status (on
 * create), frequency (on create; a campaign's page has the live slider), schedule, features,
 * client events, custom rules, tags, market and, on create, the initial state. `done(c)` gets
 * the node's answer.
 */
export function campaignForm(campaign, done) {
  const c = campaign;
  const md = c?.metadata || {};
  const rules = { ...(md.custom_rules || {}) };
  const clientEvents = rules.client_events === true;
  delete rules.client_events;
  const features = md.features || [];
  const say = messenger();

  const name = h('input', { name: 'name', required: true, maxlength: '200', value: c?.name || '', autocomplete: 'off' });
  const slug = h('input', { name: 'slug', maxlength: '64', pattern: '[a-z0-9][a-z0-9\\-]*', value: c?.slug || '', autocomplete: 'off', placeholder: c ? '' : 'derived from the name' });
  const status = h('select', { name: 'status' }, h('option', { value: 'active' }, 'Active: broadcast now'), h('option', { value: 'draft' }, 'Draft: not yet'));
  const freq = h('input', { name: 'frequency', type: 'number', min: '0.1', max: '100', step: 'any', value: String(frequencyOf(c)), required: true });
  const starts = h('input', { name: 'starts_at', type: 'datetime-local', value: toLocalInput(c?.starts_at) });
  const ends = h('input', { name: 'ends_at', type: 'datetime-local', value: toLocalInput(c?.ends_at) });
  const featureBoxes = KNOWN_FEATURES.map(([f, label]) => {
    const box = h('input', { type: 'checkbox', name: `feature-${f}`, checked: features.includes(f) });
    box.id = uid('feat');
    return { f, box, el: h('div', { class: 'check' }, box, h('label', { for: box.id }, label)) };
  });
  const otherFeatures = h('input', { name: 'features', value: features.filter((f) => !KNOWN_FEATURES.some(([k]) => k === f)).join(', '), autocomplete: 'off' });
  const ce = h('input', { type: 'checkbox', name: 'client_events', checked: clientEvents });
  ce.id = uid('ce');
  const rulesText = h('textarea', { name: 'custom_rules', rows: '3', class: 'code' });
  rulesText.value = JSON.stringify(rules, null, 2);
  const rulesJson = jsonInput(rulesText, { object: true, emptyAs: {} });
  const tags = h('input', { name: 'tags', value: (md.tags || []).join(', '), autocomplete: 'off' });
  const market = h('input', { name: 'market', value: md.service_specific?.campaign?.market || '', autocomplete: 'off', placeholder: 'e.g. fr-FR, us-west' });
  let stateJson;
  const stateText = h('textarea', { name: 'state', rows: '3', class: 'code' });
  if (!c) {
    stateText.value = '{}';
    stateJson = jsonInput(stateText, { object: true, emptyAs: {} });
  }
  const submit = h('button', { type: 'submit' }, c ? 'Save changes' : 'Create campaign');
  if (c?.status === 'ended') for (const el of [name, slug, starts, ends, otherFeatures, ce, rulesText, tags, market, submit, ...featureBoxes.map((b) => b.box)]) el.disabled = true;

  const form = h(
    'form',
    { class: 'form', novalidate: true },
    field('Name', name),
    field('Slug', slug, '1–64 characters of a–z, 0–9 and -'),
    c ? null : field('Status', status),
    c ? null : field('Frequency (Hz)', freq, '0.1–100 ticks per second; change it live on the campaign’s page'),
    h('div', { class: 'row2' }, field('Starts at', starts, 'your local time; a draft becomes active then'), field('Ends at', ends, 'your local time; the campaign ends then')),
    h('fieldset', {}, h('legend', {}, 'Features'), featureBoxes.map((b) => b.el), field('Other features', otherFeatures, 'comma-separated')),
    h('fieldset', {}, h('legend', {}, 'Custom rules'), h('div', { class: 'check' }, ce, h('label', { for: ce.id }, 'Clients may publish events')), field('Other rules (JSON object)', rulesText), rulesJson.msg),
    h('div', { class: 'row2' }, field('Tags', tags, 'comma-separated'), field('Market', market, 'stored as metadata.service_specific.campaign.market')),
    c ? null : [field('Initial state (JSON object)', stateText), stateJson.msg],
    h('div', { class: 'row' }, submit),
    say.el,
  );

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    say.clear();
    if (!name.value.trim()) {
      name.setAttribute('aria-invalid', 'true');
      name.focus();
      return say.error('a name is required');
    }
    name.removeAttribute('aria-invalid');
    const r = rulesJson.check();
    if (!r.ok) return rulesText.focus();
    const customRules = { ...r.value };
    if (ce.checked) customRules.client_events = true;
    const feats = [...featureBoxes.filter((b) => b.box.checked).map((b) => b.f), ...list(otherFeatures.value)];
    const metadata = { ...md };
    metadata.features = [...new Set(feats)];
    metadata.tags = list(tags.value);
    metadata.custom_rules = customRules;
    const service = { ...(md.service_specific || {}) };
    const campaignPart = { ...(service.campaign || {}) };
    if (market.value.trim()) campaignPart.market = market.value.trim();
    else delete campaignPart.market;
    if (Object.keys(campaignPart).length) service.campaign = campaignPart;
    else delete service.campaign;
    metadata.service_specific = service;
    for (const k of ['features', 'tags']) if (!metadata[k].length && !md[k]) delete metadata[k];
    for (const k of ['custom_rules', 'service_specific']) if (!Object.keys(metadata[k]).length && !md[k]) delete metadata[k];
    submit.disabled = true;
    try {
      let out;
      if (!c) {
        const s = stateJson.check();
        if (!s.ok) return stateText.focus();
        metadata.scheduling = { frequency: Number(freq.value) };
        const body = { name: name.value.trim(), status: status.value, metadata, state: s.value };
        if (slug.value.trim()) body.slug = slug.value.trim();
        const sa = fromLocalInput(starts.value);
        const ea = fromLocalInput(ends.value);
        if (sa) body.starts_at = sa;
        if (ea) body.ends_at = ea;
        out = await api('POST', '/api/campaigns', body);
        say(`Created ${out.slug}.`);
      } else {
        const before = { name: c.name, slug: c.slug, metadata: md, starts_at: c.starts_at ?? null, ends_at: c.ends_at ?? null };
        const after = { name: name.value.trim(), slug: slug.value.trim() || c.slug, metadata, starts_at: fromLocalInput(starts.value), ends_at: fromLocalInput(ends.value) };
        // Unchanged minutes keep the stored seconds.
        if (toLocalInput(c.starts_at) === starts.value) after.starts_at = before.starts_at;
        if (toLocalInput(c.ends_at) === ends.value) after.ends_at = before.ends_at;
        const patch = mergeDiff(before, after);
        if (!Object.keys(patch).length) return say('Nothing to save.');
        out = await api('PATCH', `/api/campaigns/${seg(c.id)}`, patch);
        say('Saved.');
      }
      done(out);
    } catch (e) {
      say.error(e);
    } finally {
      submit.disabled = c?.status === 'ended';
    }
  });
  return { el: form };
}
