// Admin (`#/admin/users`, `#/admin/audit`): accounts and their roles (`/api/admin/users`:
// grant, revoke, disable, enable) and the audit log with its filters (`/api/admin/audit`).

import { api, seg, session } from './api.js';
import { h, fill, field, messenger, when, fromLocalInput, uid, announce } from './dom.js';

const ROLES = ['user', 'campaign_manager', 'localization_manager', 'pricing_manager', 'admin'];

/** `#/admin` and its tabs. */
export function adminView(main, [, tab = 'users']) {
  const tabs = h(
    'nav',
    { class: 'tabs', 'aria-label': 'Admin sections' },
    [
      ['users', 'Users and roles'],
      ['audit', 'Audit log'],
    ].map(([t, label]) => h('a', { href: `#/admin/${t}`, 'aria-current': t === tab ? 'page' : null }, label)),
  );
  const box = h('div', {});
  fill(main, h('div', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1' }, 'Admin')), tabs, box));
  if (!session.hasRole('admin')) box.append(h('p', { class: 'note' }, 'You are not an admin: the node will refuse these calls.'));
  return tab === 'audit' ? auditView(box) : usersView(box);
}

function usersView(box) {
  const query = h('input', { type: 'search', name: 'query', autocomplete: 'off' });
  const role = h('select', { name: 'role' }, h('option', { value: '' }, 'Any role'), ROLES.map((r) => h('option', { value: r }, r)));
  const state = h('select', { name: 'disabled' }, h('option', { value: '' }, 'Enabled and disabled'), h('option', { value: 'false' }, 'Enabled'), h('option', { value: 'true' }, 'Disabled'));
  const say = messenger();
  const rows = h('tbody', {});
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let cursor = null;
  const filters = h(
    'form',
    { class: 'filters', role: 'search' },
    field('Search (name or email)', query),
    field('Role', role),
    field('Status', state),
    h('div', { class: 'field end' }, h('button', { type: 'submit' }, 'Apply')),
  );
  let asked = 0;
  const load = async (append) => {
    const mine = ++asked; // an older answer arriving late is dropped
    const q = new URLSearchParams({ limit: '50' });
    if (query.value.trim()) q.set('query', query.value.trim());
    if (role.value) q.set('role', role.value);
    if (state.value) q.set('disabled', state.value);
    if (append && cursor) q.set('cursor', cursor);
    try {
      const page = await api('GET', `/api/admin/users?${q}`);
      if (mine !== asked) return;
      if (!append) rows.replaceChildren();
      rows.append(...page.items.map(userRow));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      if (!append) say(`${rows.children.length}${cursor ? '+' : ''} user${rows.children.length === 1 ? '' : 's'}.`);
    } catch (e) {
      say.error(e);
    }
  };
  const act = async (what, call, row) => {
    say.clear();
    try {
      const user = await call();
      row.replaceWith(userRow(user));
      say(what);
      announce(what);
      if (user.id === session.user?.id) session.setUser(user);
    } catch (e) {
      say.error(e);
    }
  };
  function userRow(u) {
    const row = h('tr', { dataset: { user: u.username } });
    const grant = h('select', { 'aria-label': `Role to grant ${u.username}` }, ROLES.filter((r) => !u.roles.includes(r)).map((r) => h('option', { value: r }, r)));
    const grantBtn = h('button', { type: 'button', class: 'small', disabled: !grant.options.length }, 'Grant');
    grantBtn.addEventListener('click', () =>
      act(`Granted ${grant.value} to ${u.username}.`, () => api('POST', `/api/admin/users/${seg(u.id)}/roles`, { role: grant.value }), row),
    );
    const toggle = h('button', { type: 'button', class: u.disabled ? 'small' : 'small danger' }, u.disabled ? 'Enable' : 'Disable');
    toggle.setAttribute('aria-label', `${u.disabled ? 'Enable' : 'Disable'} ${u.username}`);
    toggle.addEventListener('click', () =>
      act(`${u.disabled ? 'Enabled' : 'Disabled'} ${u.username}.`, () => api('POST', `/api/admin/users/${seg(u.id)}/${u.disabled ? 'enable' : 'disable'}`), row),
    );
    fill(
      row,
      h('td', {}, h('b', {}, u.username), u.display_name && u.display_name !== u.username ? h('div', { class: 'muted small' }, u.display_name) : null),
      h('td', {}, u.email),
      h(
        'td',
        {},
        h(
          'ul',
          { class: 'chips' },
          u.roles.map((r) => {
            const x = h('button', { type: 'button', class: 'chip-x', 'aria-label': `Revoke ${r} from ${u.username}`, title: `Revoke ${r}` }, '×');
            x.addEventListener('click', () => act(`Revoked ${r} from ${u.username}.`, () => api('DELETE', `/api/admin/users/${seg(u.id)}/roles/${seg(r)}`), row));
            return h('li', { class: 'chip' }, r, ' ', x);
          }),
        ),
      ),
      h('td', {}, h('div', { class: 'row nowrap' }, grant, grantBtn)),
      h('td', {}, h('span', { class: `badge ${u.disabled ? 'status-ended' : 'status-active'}` }, u.disabled ? 'disabled' : 'enabled'), ' ', toggle),
      h('td', { class: 'muted small' }, when(u.created_at)),
    );
    return row;
  }
  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    load(false);
  });
  more.addEventListener('click', () => load(true));
  const capId = uid('cap');
  fill(
    box,
    filters,
    say.el,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { 'aria-labelledby': capId },
        h('caption', { id: capId }, 'Users'),
        h('thead', {}, h('tr', {}, ['User', 'Email', 'Roles', 'Grant a role', 'Status', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
        rows,
      ),
    ),
    more,
  );
  load(false);
  return () => {};
}

function auditView(box) {
  const inputs = {
    actor: h('input', { name: 'actor', autocomplete: 'off', placeholder: 'user id, anonymous, system' }),
    action: h('input', { name: 'action', autocomplete: 'off', placeholder: 'campaign.create' }),
    entity_type: h('input', { name: 'entity_type', autocomplete: 'off', placeholder: 'campaign, user, …' }),
    entity_id: h('input', { name: 'entity_id', autocomplete: 'off' }),
    since: h('input', { name: 'since', type: 'datetime-local' }),
    until: h('input', { name: 'until', type: 'datetime-local' }),
  };
  const limit = h('select', { name: 'limit' }, ['25', '50', '100', '200'].map((n) => h('option', { value: n, selected: n === '50' }, n)));
  const say = messenger();
  const rows = h('tbody', {});
  const next = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Next page');
  const first = h('button', { type: 'button', class: 'secondary', hidden: true }, 'First page');
  let cursor = null;
  const filters = h(
    'form',
    { class: 'filters', role: 'search' },
    field('Actor', inputs.actor),
    field('Action', inputs.action),
    field('Entity type', inputs.entity_type),
    field('Entity id', inputs.entity_id),
    field('Since (local time)', inputs.since),
    field('Until (local time)', inputs.until),
    field('Rows per page', limit),
    h('div', { class: 'field end row' }, h('button', { type: 'submit' }, 'Apply'), h('button', { type: 'reset', class: 'secondary' }, 'Clear')),
  );
  let asked = 0;
  const load = async (page) => {
    const mine = ++asked; // an older answer arriving late is dropped
    const q = new URLSearchParams({ limit: limit.value });
    for (const [k, el] of Object.entries(inputs)) {
      const v = el.type === 'datetime-local' ? fromLocalInput(el.value) : el.value.trim();
      if (v) q.set(k, v);
    }
    if (page && cursor) q.set('cursor', cursor);
    try {
      const res = await api('GET', `/api/admin/audit?${q}`);
      if (mine !== asked) return;
      rows.replaceChildren(...res.items.map(auditRow));
      cursor = res.next_cursor || null;
      next.hidden = !cursor;
      first.hidden = !page;
      say(`${res.items.length} row${res.items.length === 1 ? '' : 's'}${cursor ? ', more on the next page' : ''} (oldest first).`);
    } catch (e) {
      if (mine === asked) say.error(e);
    }
  };
  filters.addEventListener('submit', (ev) => {
    ev.preventDefault();
    load(false);
  });
  filters.addEventListener('reset', () => setTimeout(() => load(false)));
  next.addEventListener('click', () => load(true));
  first.addEventListener('click', () => load(false));
  const capId = uid('cap');
  fill(
    box,
    filters,
    say.el,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { 'aria-labelledby': capId },
        h('caption', { id: capId }, 'Audit log'),
        h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Action', 'Entity', 'Client', 'Change'].map((t) => h('th', { scope: 'col' }, t)))),
        rows,
      ),
    ),
    h('div', { class: 'row' }, first, next),
  );
  load(false);
  return () => {};
}

function auditRow(a) {
  const change = a.before || a.after ? h('details', {}, h('summary', {}, 'before / after'), h('pre', { class: 'code small' }, JSON.stringify({ before: a.before, after: a.after }, null, 2))) : '';
  return h(
    'tr',
    { dataset: { action: a.action } },
    h('td', { class: 'nowrap' }, when(a.at)),
    h('td', {}, h('code', {}, a.actor)),
    h('td', {}, a.action),
    h('td', {}, a.entity_type, ' ', h('code', { class: 'small' }, a.entity_id)),
    h('td', { class: 'muted small' }, a.client_addr || ''),
    h('td', {}, change),
  );
}
