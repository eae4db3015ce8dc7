// Small DOM helpers of the console: element building (text always as text nodes, never as
// HTML), number and time formatting, and the page's live region.

/** `h('button', {type: 'button', onclick}, 'Save')`: an element with properties and children. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (['value', 'checked', 'textContent', 'selected', 'indeterminate'].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
/** A unique id for label/aria wiring. */
export const uid = (p = 'id') => `${p}-${++ids}`;

/** A labelled form control: `<div class="field"><label for>…</label>control<small>hint</small></div>`. */
export function field(label, control, hint) {
  control.id ||= uid('f');
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hid = uid('hint');
    control.setAttribute('aria-describedby', [control.getAttribute('aria-describedby'), hid].filter(Boolean).join(' '));
    parts.push(h('small', { id: hid, class: 'hint' }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

/** A message line for a form or panel: `say(text)`, `say.error(e)`, `say.clear()`. */
export function messenger(cls = 'msg') {
  const el = h('p', { class: cls, role: 'status', 'aria-live': 'polite' });
  const say = (text) => {
    el.classList.remove('error');
    el.textContent = text || '';
  };
  say.error = (e) => {
    el.classList.add('error');
    el.textContent = 'Error: ' + errorText(e);
  };
  say.clear = () => say('');
  say.el = el;
  return say;
}

/** What to tell the user about an error: the API's JSON message when there is one. */
export function errorText(e) {
  return (e && (e.message || String(e))) || 'unknown error';
}

/** Tells screen readers (the page's polite live region). */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  setTimeout(() => (el.textContent = text), 50);
}

const nf = new Intl.NumberFormat('en', { maximumFractionDigits: 2 });
export const num = (n) => (n == null || Number.isNaN(n) ? '–' : nf.format(n));
export const hz = (n) => (n == null ? '–' : `${num(n)} Hz`);
export const pct = (n) => (n == null || !Number.isFinite(n) ? '–' : `${new Intl.NumberFormat('en', { maximumFractionDigits: 2 }).format(n * 100)} %`);

/** `12:03:04.567` in local time. */
export function clock(ms, withMs = true) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${withMs ? '.' + p(d.getMilliseconds(), 3) : ''}`;
}

/** An RFC 3339 time shown in local time, e.g. `2026-11-26 10:00`. */
export function when(rfc3339) {
  if (!rfc3339) return '';
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** An RFC 3339 UTC time as the value of an `<input type="datetime-local">` (local time). */
export function toLocalInput(rfc3339) {
  if (!rfc3339) return '';
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The value of an `<input type="datetime-local">` as RFC 3339 UTC, or null when empty. */
export function fromLocalInput(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace(/\.000Z$/, 'Z');
}

/** Parses JSON text the user typed; `{ok, value}` or `{ok: false, message}`. */
export function parseJson(text, { object = false, emptyAs } = {}) {
  if (!text.trim() && emptyAs !== undefined) return { ok: true, value: emptyAs };
  try {
    const value = JSON.parse(text);
    if (object && (value === null || typeof value !== 'object' || Array.isArray(value))) {
      return { ok: false, message: 'must be a JSON object, like {"score": 1}' };
    }
    return { ok: true, value };
  } catch (e) {
    return { ok: false, message: `not valid JSON: ${e.message}` };
  }
}

/** Wires live validation of a JSON textarea; returns a function giving the parsed value or null. */
export function jsonInput(textarea, options) {
  const say = messenger('msg small');
  const id = uid('err');
  say.el.id = id;
  textarea.setAttribute('aria-describedby', [textarea.getAttribute('aria-describedby'), id].filter(Boolean).join(' '));
  textarea.spellcheck = false;
  const check = () => {
    const r = parseJson(textarea.value, options);
    textarea.setAttribute('aria-invalid', String(!r.ok));
    if (r.ok) say.clear();
    else say.error(r.message);
    return r;
  };
  textarea.addEventListener('input', check);
  return { check, msg: say.el };
}

/** A modal confirmation (`<dialog>`): resolves true when confirmed. */
export function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const dlg = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title),
      h('p', {}, text),
      h(
        'form',
        { method: 'dialog', class: 'row end' },
        h('button', { value: 'cancel', type: 'submit', class: 'secondary' }, 'Cancel'),
        h('button', { value: 'ok', type: 'submit', class: 'danger' }, confirmLabel),
      ),
    );
    dlg.addEventListener('close', () => {
      resolve(dlg.returnValue === 'ok');
      dlg.remove();
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}
