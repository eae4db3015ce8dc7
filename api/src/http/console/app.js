// The OVASABI console: sign-in, then campaigns (`#/campaigns`), one campaign's live page
// (`#/campaigns/{id}`) and admin (`#/admin/...`), routed by the URL's fragment.
//
// A link `/#token=<access token>` (what `ovasabi --dev` prints; `&refresh=<refresh token>` and
// `&watch=<campaign>` may follow) signs in with that token, also when pasted into a tab that is
// already open (`hashchange`); the token is taken out of the address bar at once.

import { api, session } from './api.js';
import { campaignsView, newCampaignView, campaigns } from './campaigns.js';
import { campaignView } from './live.js';
import { adminView } from './admin.js';
import { h, fill, field, messenger, announce } from './dom.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
const who = document.getElementById('who');
const adminLink = document.querySelector('[data-nav="admin"]');
let view = null; // the current view's dispose function
let signInNote = '';
let adopting = false;

const ROUTES = [
  [/^#\/campaigns\/new$/, newCampaignView, 'campaigns'],
  [/^#\/campaigns\/([^/]+)$/, campaignView, 'campaigns'],
  [/^#\/campaigns$/, campaignsView, 'campaigns'],
  [/^#\/admin(?:\/(users|audit))?$/, adminView, 'admin'],
];

/** A `#token=...` link: its parameters, or null. */
function linkParams() {
  const hash = location.hash.slice(1);
  if (!/(^|&)token=/.test(hash)) return null;
  return new URLSearchParams(hash);
}

async function route() {
  const link = linkParams();
  if (link) {
    const watch = link.get('watch');
    // Out of the address bar (and the history) before anything else.
    history.replaceState(null, '', location.pathname + location.search + (watch ? `#/campaigns/${encodeURIComponent(watch)}` : '#/campaigns'));
    adopting = true;
    try {
      await session.adopt(link.get('token'), link.get('refresh'));
      announce(`Signed in as ${session.user.username}`);
    } catch (e) {
      session.signOut();
      signInNote = `The link’s token was refused: ${e.message}`;
    } finally {
      adopting = false;
    }
  }
  const legacy = /^#watch=([^&]+)/.exec(location.hash);
  if (legacy) history.replaceState(null, '', `#/campaigns/${legacy[1]}`);
  view?.();
  view = null;
  if (!session.signedIn) return showSignIn();
  showChrome();
  if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/campaigns');
  for (const [re, fn, nav] of ROUTES) {
    const m = re.exec(location.hash);
    if (m) {
      markNav(nav);
      view = fn(main, m) || null;
      focusHeading();
      return;
    }
  }
  markNav('');
  fill(main, h('div', { class: 'page' }, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, 'Nothing at ', h('code', {}, location.hash), '. ', h('a', { href: '#/campaigns' }, 'Go to the campaigns'))));
  focusHeading();
}

let routed = false;
function focusHeading() {
  // Not on the first load (the page starts at the top); after a navigation, the new view's title.
  if (!routed) return void (routed = true);
  requestAnimationFrame(() => main.querySelector('h1')?.focus({ preventScroll: false }));
}

function markNav(nav) {
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function showChrome() {
  top.hidden = false;
  const u = session.user;
  fill(who, h('span', { class: 'user' }, u?.display_name || u?.username || '?'), ' ', h('small', { class: 'muted' }, (u?.roles || []).join(', ')));
  adminLink.hidden = !session.hasRole('admin');
}

function showSignIn() {
  top.hidden = true;
  const login = h('input', { name: 'login', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const persist = h('input', { type: 'checkbox', name: 'persist', id: 'persist' });
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const say = messenger();
  if (signInNote) say(signInNote);
  signInNote = '';
  const form = h(
    'form',
    { class: 'form signin', novalidate: true },
    h('h1', {}, 'OVASABI console'),
    h('p', { class: 'muted' }, 'Sign in to manage and watch campaigns.'),
    field('User name or email', login),
    field('Password', password),
    h('div', { class: 'check' }, persist, h('label', { for: 'persist' }, 'Stay signed in on this device')),
    h('div', { class: 'row' }, submit),
    say.el,
    h('p', { class: 'muted small' }, 'Running ', h('code', {}, 'ovasabi --dev'), '? Open the link it prints to sign in as its admin.'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    say.clear();
    if (!login.value.trim() || !password.value) {
      (login.value.trim() ? password : login).focus();
      return say.error('enter your user name and password');
    }
    submit.disabled = true;
    say('Signing in…');
    try {
      await session.signIn(login.value.trim(), password.value, persist.checked);
      announce(`Signed in as ${session.user.username}`);
    } catch (e) {
      say.error(e);
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, h('div', { class: 'signin-wrap' }, form));
  login.focus();
}

/** The account's current roles (the stored ones may be stale). */
async function checkMe() {
  if (!session.signedIn) return;
  try {
    session.setUser(await api('GET', '/api/users/me'));
  } catch {
    // A refused token signs out (api() does); anything else is said by the views.
  }
}

session.addEventListener('signin', () => {
  if (adopting) return; // route() goes on with it
  history.replaceState(null, '', location.hash && !linkParams() ? location.hash : '#/campaigns');
  route();
});
session.addEventListener('signout', (e) => {
  signInNote = e.detail || '';
  campaigns.items = null; // not shown to whoever signs in next
  view?.();
  view = null;
  showSignIn();
});
session.addEventListener('refresh', () => {
  if (session.signedIn && !top.hidden) showChrome();
});
document.getElementById('signout').addEventListener('click', () => {
  session.signOut('You signed out.');
});
addEventListener('hashchange', route);
document.querySelector('.skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

session.load();
route().then(checkMe);
