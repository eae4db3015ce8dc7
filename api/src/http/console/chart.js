// A dependency-free SVG line chart: a fixed time window (the last 15 minutes by default)
// ending now, a y axis from 0 to a round maximum, one line per series, and a legend that
// gives each series' latest value as text (also the chart's accessible name).

import { h, num, clock } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const HEIGHT = 150;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

/** 1, 2, 5 × 10^n at or above `v`. */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p * 1.0000001) return m * p;
  return 10 * p;
}

export class LineChart {
  /**
   * `series`: `[{key, name}]` read from each point (`{at_ms, [key]: number|null}`);
   * `unit`: shown after values; `minMax`: the least y maximum (1 by default).
   */
  constructor({ title, series, unit = '', windowMs = 15 * 60e3, minMax = 1 }) {
    this.title = title;
    this.series = series;
    this.unit = unit;
    this.windowMs = windowMs;
    this.minMax = minMax;
    this.points = [];
    this.svg = s('svg', { class: 'chart-svg', role: 'img', height: HEIGHT, preserveAspectRatio: 'none' });
    this.legend = h('ul', { class: 'legend' });
    this.note = h('small', { class: 'chart-note' });
    this.el = h('figure', { class: 'chart' }, h('figcaption', {}, h('span', { class: 'chart-title' }, title), this.legend), this.svg, this.note);
    this._ro = new ResizeObserver(() => this.draw());
    this._ro.observe(this.svg);
  }

  /** New points (oldest first) and the moment the window ends (now). */
  update(points, now = Date.now(), note = '') {
    this.points = points;
    this.now = now;
    this.note.textContent = note;
    this.draw();
  }

  dispose() {
    this._ro.disconnect();
  }

  draw() {
    const width = Math.max(200, Math.round(this.svg.getBoundingClientRect().width) || 600);
    const svg = this.svg;
    svg.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
    svg.replaceChildren();
    const now = this.now ?? Date.now();
    const t0 = now - this.windowMs;
    const pts = this.points.filter((p) => p.at_ms >= t0 - 10e3);
    let max = 0;
    for (const p of pts) for (const { key } of this.series) if (Number.isFinite(p[key])) max = Math.max(max, p[key]);
    const ymax = niceMax(Math.max(max, this.minMax));
    const x0 = PAD.left;
    const x1 = width - PAD.right;
    const y0 = HEIGHT - PAD.bottom;
    const y1 = PAD.top;
    const X = (t) => x0 + ((t - t0) / this.windowMs) * (x1 - x0);
    const Y = (v) => y0 - (v / ymax) * (y0 - y1);

    const grid = s('g', { class: 'grid' });
    for (const f of [0, 0.5, 1]) {
      const y = Y(ymax * f);
      grid.append(s('line', { x1: x0, x2: x1, y1: y, y2: y }));
      grid.append(s('text', { x: x0 - 6, y: y + 4, 'text-anchor': 'end' }, num(ymax * f)));
    }
    for (let m = 0; m <= this.windowMs / 60e3; m += 5) {
      const t = now - m * 60e3;
      const x = X(t);
      grid.append(s('line', { x1: x, x2: x, y1: y1, y2: y0, class: 'v' }));
      grid.append(s('text', { x, y: HEIGHT - 6, 'text-anchor': m === 0 ? 'end' : 'middle' }, m === 0 ? 'now' : clock(t, false).slice(0, 5)));
    }
    svg.append(grid);

    const latest = [];
    this.series.forEach(({ key, name }, i) => {
      let d = '';
      let pen = false;
      let last = null;
      for (const p of pts) {
        const v = p[key];
        if (!Number.isFinite(v)) {
          pen = false;
          continue;
        }
        const x = Math.max(x0, X(p.at_ms)).toFixed(1);
        d += `${pen ? 'L' : 'M'}${x},${Y(v).toFixed(1)}`;
        pen = true;
        last = p;
      }
      if (d) svg.append(s('path', { d, class: `line s${i}` }));
      if (last) svg.append(s('circle', { cx: X(last.at_ms).toFixed(1), cy: Y(last[key]).toFixed(1), r: 3, class: `dot s${i}` }));
      latest.push({ name, value: last ? last[key] : null, i });
    });
    this.legend.replaceChildren(
      ...latest.map(({ name, value, i }) =>
        h('li', {}, h('span', { class: `swatch s${i}`, 'aria-hidden': 'true' }), `${name}: `, h('b', {}, value == null ? '–' : `${num(value)}${this.unit}`)),
      ),
    );
    const summary = latest.map(({ name, value }) => `${name} ${value == null ? 'no data' : num(value) + this.unit}`).join(', ');
    svg.setAttribute('aria-label', `${this.title}, last ${Math.round(this.windowMs / 60e3)} minutes; latest: ${summary}`);
  }
}
