// The console (the page at `/`) in headless Chromium against a real node started here:
// sign-in (bad and good), a `--dev`-style token link (new tab and already open tab), creating a
// campaign, watching it, the frequency slider and the measured rate, publishing, a node
// restart with no missed event, the admin pages, ending the campaign, an expiring access
// token, and the layout at phone width. Every wait is bounded; nothing but 127.0.0.1 is reached.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_PASSWORD, Node, browser, listedSeqs, screenshot, signIn, skipReason, until } from './harness.js';

const status = (page) => page.locator('[data-role="client-status"]').getAttribute('data-status');
const campaignId = (page) => decodeURIComponent(/#\/campaigns\/([^/]+)$/.exec(page.url())?.[1] || '');

/** Opens the "New campaign" form, creates one, and waits for its live page. */
async function createThroughForm(page, name, hz) {
  await page.getByRole('link', { name: 'New campaign' }).click();
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Frequency (Hz)').fill(String(hz));
  await page.getByRole('button', { name: 'Create campaign' }).click();
  await page.getByRole('heading', { level: 1, name }).waitFor();
  return campaignId(page);
}

describe('the console', { skip: skipReason }, () => {
  let node;
  let br;
  let page;
  let id;

  before(async () => {
    node = await new Node().start();
    br = await browser();
    page = await br.page();
  });
  after(async () => {
    await br?.close();
    await node?.dispose();
  });

  test('a bad sign-in shows the node’s error; a good one opens the campaigns', { timeout: 30000 }, async () => {
    await page.goto(node.base + '/');
    await page.getByLabel('User name or email').waitFor();
    await screenshot(page, 'sign-in');
    await signIn(page, node.base, 'admin', 'not-the-password');
    await page.getByText('Error: wrong username/email or password').waitFor();
    assert.equal(await page.getByRole('heading', { name: 'Campaigns' }).count(), 0);
    await signIn(page, node.base);
    await page.getByRole('heading', { level: 1, name: 'Campaigns' }).waitFor();
    await page.getByRole('link', { name: 'Admin' }).waitFor(); // the admin sees Admin
    assert.deepEqual(page.errors.filter((e) => !/401/.test(e)), []);
  });

  test('create a campaign and watch it live', { timeout: 30000 }, async () => {
    id = await createThroughForm(page, 'Browser test', 1);
    assert.ok(id, page.url());
    assert.equal(await page.locator('[data-role="campaign-status"]').textContent(), 'active');
    await until(async () => (await status(page)) === 'live', 15000, 'the client to go live');
    await until(async () => (await page.locator('[data-figure="node"]').textContent()) === 'node-test', 10000, 'the node id');
    await until(async () => (await page.locator('[data-figure="frequency_hz"]').textContent()) === '1 Hz', 10000, 'configured 1 Hz');
  });

  test('the frequency slider applies live and the measured rate follows', { timeout: 45000 }, async () => {
    const slider = page.getByLabel('Broadcast frequency');
    await slider.focus();
    for (let i = 0; i < 5; i++) await slider.press('ArrowRight'); // 1 → 10 Hz
    await until(async () => (await page.locator('output.freq-out').textContent()) === '10 Hz', 5000, 'the slider at 10 Hz');
    await until(async () => (await page.locator('[data-figure="frequency_hz"]').textContent()) === '10 Hz', 10000, 'configured 10 Hz');
    const c = await node.request('GET', `/api/campaigns/${id}`);
    assert.equal(c.metadata.scheduling.frequency, 10);
    await until(async () => Number(await page.locator('[data-figure="tick_rate_hz"]').getAttribute('data-value')) >= 8, 30000, 'a measured rate near 10 Hz');
  });

  test('publish an event from the page and see it arrive', { timeout: 30000 }, async () => {
    await page.getByLabel('Event name').fill('goal');
    await page.getByLabel('Data (JSON)').fill('{"team": "a"}');
    await page.getByRole('button', { name: 'Publish' }).click();
    const msg = await page.getByText(/^Published goal: seq \d+\.$/).textContent({ timeout: 10000 });
    const seq = Number(/seq (\d+)/.exec(msg)[1]);
    const li = page.locator(`[data-role="events"] li[data-seq="${seq}"]`);
    await li.waitFor();
    assert.match(await li.textContent(), /goal.*"team":"a"/);
    // Bad JSON is refused before any call, with the reason.
    await page.getByLabel('Data (JSON)').fill('{"team": ');
    await page.getByText(/Error: not valid JSON/).first().waitFor();
    await page.getByLabel('Data (JSON)').fill('{}');
  });

  test('a node restart: the page reconnects and resumes with every event once, in order', { timeout: 60000 }, async () => {
    const seqs = [];
    for (let i = 1; i <= 3; i++) seqs.push((await node.publish(id, `before-${i}`, { i })).seq);
    await until(async () => (await listedSeqs(page)).includes(seqs.at(-1)), 10000, 'the events before the restart');
    await node.stop('SIGTERM');
    await until(async () => (await status(page)) === 'connecting', 10000, 'the page to see the drop');
    await node.start();
    await until(async () => (await status(page)) === 'live', 20000, 'the page to be live again');
    for (let i = 1; i <= 3; i++) seqs.push((await node.publish(id, `after-${i}`, { i })).seq);
    await until(async () => (await listedSeqs(page)).includes(seqs.at(-1)), 10000, 'the events after the restart');
    const listed = await listedSeqs(page);
    for (const s of seqs) assert.equal(listed.filter((x) => x === s).length, 1, `seq ${s} once in ${listed}`);
    // In order (the node numbers on after a restart, from a higher block: seqs may jump).
    for (let i = 1; i < listed.length; i++) assert.ok(listed[i] > listed[i - 1], `in order: ${listed}`);
    const published = await page.locator('[data-role="events"] li[data-seq]').count();
    assert.equal(published, listed.length);
    await until(async () => (await page.locator('[data-role="campaign-status"]').textContent()) === 'active', 5000, 'still signed in');
  });

  test('charts and figures of the live view', { timeout: 30000 }, async () => {
    // A second campaign in each status, for the list.
    await node.request('POST', '/api/campaigns', { name: 'Summer quiz', status: 'draft', metadata: { scheduling: { frequency: 2 }, features: ['presence'] } });
    const old = await node.request('POST', '/api/campaigns', { name: 'Winter launch' });
    await node.request('DELETE', `/api/campaigns/${old.id}`);
    await page.getByRole('link', { name: /Summer quiz/ }).waitFor({ timeout: 10000 });
    for (const chart of ['Connections', 'Frames per second', 'Dropped frames per second', 'Tick rate (Hz)']) {
      // A line of two points or more (a flat one has no height: Playwright calls it hidden).
      const line = page.locator('figure.chart', { hasText: chart }).locator('svg path.line').first();
      await until(async () => /L/.test((await line.getAttribute('d', { timeout: 1000 })) || ''), 20000, `a line in ${chart}`);
    }
    const label = await page.locator('figure.chart', { hasText: 'Connections' }).locator('svg').getAttribute('aria-label');
    assert.match(label, /this node 1\b/);
    await page.evaluate(() => {
      document.activeElement?.blur();
      window.scrollTo(0, 0);
    });
    await screenshot(page, 'live');
  });

  test('the campaigns list, grouped by status', { timeout: 20000 }, async () => {
    await page.getByRole('link', { name: 'Campaigns', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'Campaigns' }).waitFor();
    const group = (s) => page.locator(`section[data-status="${s}"]`);
    await group('active').getByText('Browser test').waitFor();
    await group('draft').getByText('Summer quiz').waitFor();
    await group('ended').getByText('Winter launch').waitFor();
    await screenshot(page, 'campaigns');
  });

  test('admin: users and roles, the audit log', { timeout: 30000 }, async () => {
    await fetch(node.base + '/api/auth/register', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'mia', email: 'mia@example.com', password: 'mia-password-1', display_name: 'Mia' }),
    });
    await page.getByRole('link', { name: 'Admin' }).click();
    const row = page.locator('tr[data-user="mia"]');
    await row.waitFor();
    await row.getByLabel('Role to grant mia').selectOption('campaign_manager');
    await row.getByRole('button', { name: 'Grant' }).click();
    await page.getByText('Granted campaign_manager to mia.').waitFor();
    await page.locator('tr[data-user="mia"]').getByRole('button', { name: 'Revoke campaign_manager from mia' }).waitFor();
    await page.locator('tr[data-user="mia"]').getByRole('button', { name: 'Disable mia' }).click();
    await page.getByText('Disabled mia.').waitFor();
    await page.locator('tr[data-user="mia"]').getByText('disabled', { exact: true }).waitFor();
    // The node's own refusal, with its message: nobody disables themselves.
    await page.locator('tr[data-user="admin"]').getByRole('button', { name: 'Disable admin' }).click();
    await page.locator('p.msg.error').waitFor();
    assert.match(await page.locator('p.msg.error').textContent(), /^Error: .+/);
    await screenshot(page, 'admin-users');
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByLabel('Action').fill('user.grant_role');
    await page.getByRole('button', { name: 'Apply' }).click();
    await until(
      async () => {
        const actions = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.action));
        return actions.length > 0 && actions.every((a) => a === 'user.grant_role');
      },
      10000,
      'only user.grant_role rows',
    );
    await screenshot(page, 'admin-audit');
  });

  test('end the campaign: the stream stops and it moves to Ended', { timeout: 30000 }, async () => {
    await page.goto(`${node.base}/#/campaigns/${id}`);
    await until(async () => (await status(page)) === 'live', 15000, 'live');
    await page.getByRole('button', { name: 'End campaign…' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'End campaign', exact: true }).click();
    await until(async () => (await page.locator('[data-role="campaign-status"]').textContent()) === 'ended', 10000, 'the badge says ended');
    await until(async () => (await status(page)) === 'stopped', 10000, 'the stream stopped');
    assert.match(await page.locator('[data-role="client-status"]').textContent(), /campaign ended/);
    await page.locator('section[data-status="ended"]').getByText('Browser test').waitFor({ timeout: 10000 });
    assert.equal(await page.locator('section[data-status="active"]').getByText('Browser test').count(), 0);
  });

  test('a token link signs in, in a new tab and in one already open, and leaves the address bar', { timeout: 30000 }, async () => {
    const t = await fetch(node.base + '/api/auth/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ login: 'admin', password: ADMIN_PASSWORD }),
    }).then((r) => r.json());
    const fresh = await br.page();
    await fresh.goto(`${node.base}/#token=${t.access_token}`);
    await fresh.getByRole('heading', { level: 1, name: 'Campaigns' }).waitFor();
    assert.ok(!fresh.url().includes('token'), fresh.url());
    const open = await br.page();
    await open.goto(node.base + '/');
    await open.getByLabel('User name or email').waitFor();
    await open.evaluate((tok) => (location.hash = `#token=${tok}&watch=browser-test`), t.access_token);
    await open.getByRole('heading', { level: 1, name: 'Browser test' }).waitFor();
    assert.ok(!open.url().includes('token'), open.url());
    // Signing out comes back to the form.
    await open.getByRole('button', { name: 'Sign out' }).click();
    await open.getByLabel('User name or email').waitFor();
    await fresh.context().close();
    await open.context().close();
  });

  test('every control has a label; phone width has no sideways scroll', { timeout: 30000 }, async () => {
    await page.goto(`${node.base}/#/campaigns/${id}`);
    await page.getByRole('heading', { level: 2, name: 'Settings' }).waitFor();
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim())))
        .map((el) => el.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unlabelled, []);
    const phone = await br.page({ viewport: { width: 390, height: 844 } });
    await signIn(phone, node.base);
    await phone.getByRole('heading', { level: 1, name: 'Campaigns' }).waitFor();
    for (const hash of ['#/campaigns', `#/campaigns/${id}`, '#/admin/users', '#/admin/audit']) {
      await phone.evaluate((h) => (location.hash = h), hash);
      await phone.locator('main h1').waitFor();
      await phone.waitForTimeout(300);
      const width = await phone.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `${hash}: ${width} px wide`);
    }
    await phone.context().close();
  });
});

describe('with a 5 s access token', { skip: skipReason }, () => {
  let node;
  let br;
  before(async () => {
    node = await new Node(['--access-token-ttl', '5s']).start();
    br = await browser();
  });
  after(async () => {
    await br?.close();
    await node?.dispose();
  });

  test('the page keeps working past the token’s expiry by refreshing it', { timeout: 60000 }, async () => {
    const c = await node.request('POST', '/api/campaigns', { name: 'Short tokens', metadata: { scheduling: { frequency: 5 } } });
    const page = await br.page();
    await signIn(page, node.base);
    await page.getByRole('heading', { level: 1, name: 'Campaigns' }).waitFor();
    await page.getByRole('link', { name: /Short tokens/ }).click();
    await until(async () => (await status(page)) === 'live', 15000, 'live');
    const refreshes = [];
    page.on('request', (r) => r.url().endsWith('/api/auth/refresh') && refreshes.push(r));
    await page.waitForTimeout(12000); // more than two lifetimes of a token
    assert.ok(refreshes.length >= 2, `refreshed ${refreshes.length} times`);
    assert.equal(await status(page), 'live');
    assert.equal(await page.getByLabel('User name or email').count(), 0, 'still signed in');
    // REST calls and the stream both still work.
    await page.getByLabel('Event name').fill('late');
    await page.getByRole('button', { name: 'Publish' }).click();
    const msg = await page.getByText(/^Published late: seq \d+\.$/).textContent({ timeout: 10000 });
    await page.locator(`[data-role="events"] li[data-seq="${/seq (\d+)/.exec(msg)[1]}"]`).waitFor();
    const late = await node.request('POST', '/api/campaigns', { name: 'Listed later' });
    await page.locator('aside').getByText('Listed later').waitFor({ timeout: 10000 });
    await node.request('DELETE', `/api/campaigns/${late.id}`);
    assert.deepEqual(page.errors.filter((e) => !/40[14]/.test(e)), []);
    await page.context().close();
    void c;
  });
});
