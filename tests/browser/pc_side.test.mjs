// The PC side in headless Chromium: the hosted page, the popup and qrlogin.js on another origin,
// against a real relay (RELAY) with its WeChat simulator (WECHAT) and a test site (SITE).
// Started by tests/api/browser.rs, which sets these variables; screenshots go to SHOTS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, freshPage, call, mint, scanAs, confirm, redeem, nextSession, isCreate } from './relay.mjs';

const { RELAY, SITE, SHOTS } = process.env;
// The same test site under another name: an origin the relay does not know.
const STRANGER = SITE.replace('127.0.0.1', 'localhost');
const CALLBACK = `${SITE}/callback.html`;

let browser;
before(async () => {
  browser = await launch();
});
after(() => browser.close());

const fresh = (t, options) => freshPage(browser, t, options);
let lastScan = null;

async function scan(session, user) {
  lastScan = await scanAs(session, user);
  return lastScan.scan_token;
}

async function logIn(session, user) {
  await confirm(session, await scan(session, user), user);
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png` });
}

const statusOf = (page) => page.locator('.qrlogin-status');

async function sees(page, text) {
  await page.locator('.qrlogin-status', { hasText: text }).waitFor();
}

function hostedUrl(params) {
  return `${RELAY}/login?${new URLSearchParams({ redirect_uri: CALLBACK, ...params })}`;
}

test('the README snippet: full-page redirect to the hosted page and back with a ticket', async (t) => {
  const { context, page } = await fresh(t);
  await page.goto(`${SITE}/index.html`);
  await sees(page, 'Scan with WeChat to log in');
  const created = nextSession(context);
  await page.click('#redirect-login');
  const session = await created;
  await page.waitForURL((url) => url.href.startsWith(`${RELAY}/login?`));
  await sees(page, 'Scan with WeChat to log in');
  const code = page.locator('.qrlogin-code');
  assert.match(await code.getAttribute('alt'), /WeChat login code for Sandbox Mini Program/);
  assert.equal(await statusOf(page).getAttribute('aria-live'), 'polite');
  assert.equal(await code.evaluate((img) => img.naturalWidth > 0), true, 'the code image loaded');
  await shot(page, 'hosted-waiting');

  const token = await scan(session, 'alice');
  await sees(page, 'Scanned — confirm on your phone');
  await shot(page, 'hosted-scanned');
  assert.match(lastScan.session.client.browser, /^Chrome \d+ · Linux$/, 'the phone reads which browser asked');
  await confirm(session, token, 'alice');
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const received = JSON.parse(await page.locator('#received').textContent());
  assert.equal(received.state_ok, true, 'the state came back unchanged');
  await shot(page, 'site-callback');
  const redeemed = await redeem(received.ticket);
  assert.equal(redeemed.status, 200, JSON.stringify(redeemed.body));
  assert.equal(redeemed.body.user.phone_number, '13800138000');
});

test('the README snippet: the inline widget on another origin, through CORS', async (t) => {
  const { context, page } = await fresh(t);
  const created = nextSession(context);
  await page.goto(`${SITE}/index.html`);
  const session = await created;
  await sees(page, 'Scan with WeChat to log in');
  await logIn(session, 'bob');
  await page.locator('#result', { hasText: 'ticket: ' }).waitFor();
  await sees(page, 'Logged in');
  await shot(page, 'inline-confirmed');
  const ticket = (await page.locator('#result').textContent()).replace('ticket: ', '');
  assert.equal((await redeem(ticket)).status, 200);
});

test('the README snippet: the popup hands the ticket to the opener and closes', async (t) => {
  const { context, page } = await fresh(t);
  await page.goto(`${SITE}/index.html`);
  await sees(page, 'Scan with WeChat to log in');
  const created = nextSession(context);
  const opened = page.waitForEvent('popup');
  await page.click('#popup-login');
  const popup = await opened;
  const session = await created;
  await popup.locator('.qrlogin-code').waitFor();
  await sees(popup, 'Scan with WeChat to log in');
  await shot(popup, 'popup-waiting');
  const closed = popup.waitForEvent('close');
  await logIn(session, 'carol');
  await closed;
  await page.locator('#result', { hasText: 'ticket: ' }).waitFor();
  const ticket = (await page.locator('#result').textContent()).replace('ticket: ', '');
  assert.equal((await redeem(ticket)).status, 200);
});

test('a popup opened by a page of another origin sends it nothing', async (t) => {
  const { context, page } = await fresh(t);
  const url = hostedUrl({ connection: 'default', state: 'p1', mode: 'popup' });
  await page.goto(`${STRANGER}/opener.html?url=${encodeURIComponent(url)}`);
  const created = nextSession(context);
  const opened = page.waitForEvent('popup');
  await page.click('#open');
  const popup = await opened;
  const session = await created;
  await sees(popup, 'Scan with WeChat to log in');
  const closed = popup.waitForEvent('close');
  await logIn(session, 'dave');
  await closed;
  // The popup posted to the registered site's exact origin only: this page heard nothing.
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
  assert.deepEqual(await page.evaluate(() => window.received), []);
});

test('with WebSockets blocked the widget long-polls to the end', async (t) => {
  const { context, page } = await fresh(t);
  await page.routeWebSocket(/\/ws$/, (ws) => ws.close());
  const polls = [];
  page.on('request', (r) => { if (r.url().includes('?wait=')) polls.push(r.url()); });
  const created = nextSession(context);
  await page.goto(`${SITE}/widget.html`);
  const session = await created;
  await sees(page, 'Scan with WeChat to log in');
  const token = await scan(session, 'erin');
  await sees(page, 'Scanned — confirm on your phone');
  await confirm(session, token, 'erin');
  await page.locator('#result', { hasText: '.' }).waitFor();
  assert.ok(polls.length >= 2, `long-polled (${polls.length} requests)`);
  assert.ok(polls.every((url) => !url.includes('secret')), 'the secret is never in a URL');
  assert.equal((await redeem(await page.locator('#result').textContent())).status, 200);
});

test('a dropped socket shows network trouble, reconnects and carries on', async (t) => {
  const { context, page } = await fresh(t);
  let connections = 0;
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  await page.routeWebSocket(/\/ws$/, (ws) => {
    connections += 1;
    if (connections === 1) {
      // The first socket delivers one frame, then the network drops it.
      const server = ws.connectToServer();
      ws.onMessage((message) => server.send(message));
      server.onMessage((message) => { ws.send(message); ws.close({ code: 4000, reason: 'network' }); });
      return;
    }
    // The reconnect gets through once the test has seen the trouble on the page.
    const early = [];
    ws.onMessage((message) => early.push(message));
    released.then(() => {
      const server = ws.connectToServer();
      early.forEach((message) => server.send(message));
      ws.onMessage((message) => server.send(message));
      server.onMessage((message) => ws.send(message));
    });
  });
  const created = nextSession(context);
  await page.goto(`${SITE}/widget.html`);
  const session = await created;
  await sees(page, 'Connection lost — reconnecting…');
  await shot(page, 'widget-trouble');
  release();
  await sees(page, 'Scan with WeChat to log in');
  assert.equal(connections, 2, 'one reconnect');
  await scan(session, 'fred');
  await sees(page, 'Scanned — confirm on your phone');
});

test('expired codes are renewed in place, then wait for a click', async (t) => {
  const { page } = await fresh(t);
  let navigations = 0;
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations += 1; });
  await page.goto(`${SITE}/widget.html?connection=short`);
  const code = page.locator('.qrlogin-code');
  await code.waitFor();
  const first = await code.getAttribute('src');
  await page.waitForFunction((src) => {
    const img = document.querySelector('.qrlogin-code');
    return img && !img.hidden && img.getAttribute('src') && img.getAttribute('src') !== src;
  }, first);
  assert.equal(navigations, 1, 'a new code appeared without a reload');
  // After three renewals nobody acted on, the widget stops and offers a button.
  const renew = page.getByRole('button', { name: 'Show a new code' });
  await renew.waitFor({ timeout: 20000 });
  await sees(page, 'This code has expired');
  await shot(page, 'widget-expired');
  const stale = await code.getAttribute('src');
  await renew.click();
  await page.waitForFunction((src) => {
    const img = document.querySelector('.qrlogin-code');
    return img && !img.hidden && img.getAttribute('src') && img.getAttribute('src') !== src;
  }, stale);
  assert.equal(navigations, 1);
});

test('a hidden tab burns no sessions: renewal waits until it is seen again', async (t) => {
  const { context, page } = await fresh(t);
  // The tab is in the background from the start (what the widget reads of visibility).
  await page.addInitScript(() => {
    window.__hidden = true;
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__hidden });
  });
  let created = 0;
  context.on('response', (r) => { if (isCreate(r)) created += 1; });
  await page.goto(`${SITE}/widget.html?connection=short`);
  await page.getByRole('button', { name: 'Show a new code' }).waitFor();
  await sees(page, 'This code has expired');
  assert.equal(created, 1, 'no renewal while hidden');
  const renewed = nextSession(context);
  await page.evaluate(() => { window.__hidden = false; document.dispatchEvent(new Event('visibilitychange')); });
  await renewed;
  await sees(page, 'Scan with WeChat to log in');
  assert.equal(created, 2);
});

test('a cancel on the phone is shown, with a way to start again', async (t) => {
  const { context, page } = await fresh(t);
  const created = nextSession(context);
  await page.goto(`${SITE}/widget.html`);
  const session = await created;
  const token = await scan(session, 'gus');
  await sees(page, 'Scanned — confirm on your phone');
  const cancelled = await call('POST', `${RELAY}/v1/mp/cancel`, { scene: session.id, scan_token: token });
  assert.equal(cancelled.status, 200);
  await sees(page, 'The login was cancelled on the phone');
  await shot(page, 'widget-cancelled');
  const again = nextSession(context);
  await page.getByRole('button', { name: 'Try again' }).click();
  const next = await again;
  assert.notEqual(next.id, session.id);
  await sees(page, 'Scan with WeChat to log in');
});

test('a relay error is said in words, with a retry that asks again', async (t) => {
  const { context, page } = await fresh(t);
  const asked = [];
  page.on('request', (r) => { if (r.url().startsWith(`${RELAY}/v1/`)) asked.push(`${r.method()} ${r.url().slice(RELAY.length)}`); });
  await page.goto(`${SITE}/widget.html?connection=nope`);
  await sees(page, 'Something went wrong: This login is not configured');
  await page.locator('#events', { hasText: 'error unknown_connection' }).waitFor();
  await shot(page, 'widget-error');
  const answered = context.waitForEvent('response', { predicate: (r) => r.url().endsWith('/v1/connections/nope') });
  await page.getByRole('button', { name: 'Try again' }).click();
  await answered;
  await sees(page, 'Something went wrong: This login is not configured');
  assert.deepEqual(asked, ['GET /v1/connections/nope', 'GET /v1/connections/nope'], 'no session was started');
});

test('a person the account hook refuses sees why, on the hosted page', async (t) => {
  const { context, page } = await fresh(t);
  const created = nextSession(context);
  await page.goto(hostedUrl({ connection: 'members', state: 'm1' }));
  const session = await created;
  const token = await scan(session, 'mallory');
  await sees(page, 'Scanned — confirm on your phone');
  const phone_code = await mint('phone-code', { user: 'mallory', phone: '13800138000' });
  const refused = await call('POST', `${RELAY}/v1/mp/confirm`, { scene: session.id, scan_token: token, phone_code });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error, 'account_denied');
  await sees(page, 'Login refused: No account for this WeChat user');
  assert.ok(page.url().startsWith(`${RELAY}/login?`), 'no redirect to the site');
  await shot(page, 'hosted-denied');
});

test('the hosted page speaks Chinese and English', async (t) => {
  const { page } = await fresh(t);
  await page.goto(hostedUrl({ connection: 'default', state: 'l1', lang: 'zh-CN' }));
  await sees(page, '请使用微信扫一扫登录');
  assert.equal(await page.locator('html').getAttribute('lang'), 'zh-CN');
  assert.match(await page.locator('.qrlogin-code').getAttribute('alt'), /微信登录码/);
  assert.equal(await page.getByRole('tab', { name: '微信扫码登录' }).count(), 1);
  await shot(page, 'hosted-zh-CN');
  await page.goto(hostedUrl({ connection: 'default', state: 'l2', lang: 'en' }));
  await sees(page, 'Scan with WeChat to log in');

  const { page: chinese } = await fresh(t, { locale: 'zh-CN' });
  await chinese.goto(hostedUrl({ connection: 'default', state: 'l3' }));
  await sees(chinese, '请使用微信扫一扫登录');
});

test('form_post mode posts the ticket and state to the site', async (t) => {
  const { context, page } = await fresh(t);
  const created = nextSession(context);
  await page.goto(hostedUrl({ connection: 'default', state: 'fp1', response_mode: 'form_post' }));
  const session = await created;
  await logIn(session, 'hana');
  await page.waitForURL(CALLBACK);
  const received = JSON.parse(await page.locator('#received').textContent());
  assert.equal(received.state, 'fp1');
  assert.equal((await redeem(received.ticket)).status, 200);
});

/** Scans WeChat's own (simulated) QR page as `user`, in whatever frame shows it. */
async function allowOnWeChat(frame, user) {
  await frame.locator('input[name="user"]').fill(user);
  await frame.getByRole('button', { name: 'Scan and allow' }).click();
}

test('website app, embedded in the hosted page: the browser that started it finishes it', async (t) => {
  const { page } = await fresh(t);
  await page.goto(hostedUrl({ connection: 'website', state: 'w1' }));
  await sees(page, 'Scan the QR code with WeChat to log in');
  const wechat = page.frameLocator('.qrlogin-frame');
  await wechat.getByRole('button', { name: 'Scan and allow' }).waitFor();
  await shot(page, 'hosted-website-embed');
  await allowOnWeChat(wechat, 'ivy');
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const ticket = new URL(page.url()).searchParams.get('ticket');
  const redeemed = await redeem(ticket);
  assert.equal(redeemed.status, 200);
  assert.equal(redeemed.body.user.path, 'website');
  assert.equal(redeemed.body.user.nickname, 'ivy');
});

test('website app, embedded by qrlogin.js on the site: the iframe hands over to the secret holder', async (t) => {
  const { page } = await fresh(t);
  await page.goto(`${SITE}/widget.html?connection=website`);
  const wechat = page.frameLocator('.qrlogin-frame');
  await allowOnWeChat(wechat, 'jack');
  await page.locator('#result', { hasText: '.' }).waitFor();
  await sees(page, 'Logged in');
  await shot(page, 'widget-website-confirmed');
  const redeemed = await redeem(await page.locator('#result').textContent());
  assert.equal(redeemed.status, 200);
  assert.equal(redeemed.body.user.nickname, 'jack');
});

test('website app, redirect mode: to WeChat and back to the hosted page, then the site', async (t) => {
  const { page } = await fresh(t);
  await page.goto(hostedUrl({ connection: 'website', state: 'w2' }));
  await page.frameLocator('.qrlogin-frame').getByRole('button', { name: 'Scan and allow' }).waitFor();
  await page.getByRole('button', { name: /Open WeChat login in this window/ }).click();
  await page.waitForURL((url) => url.href.includes('/connect/qrconnect?'));
  await allowOnWeChat(page, 'kate');
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const url = new URL(page.url());
  assert.equal(url.searchParams.get('state'), 'w2');
  assert.equal((await redeem(url.searchParams.get('ticket'))).status, 200);
});

test('a WeChat link opened in another browser confirms nothing', async (t) => {
  const { context, page } = await fresh(t);
  const created = nextSession(context);
  await page.goto(hostedUrl({ connection: 'website', state: 'w3' }));
  const session = await created;
  const frame = page.locator('.qrlogin-frame');
  await page.frameLocator('.qrlogin-frame').getByRole('button', { name: 'Scan and allow' }).waitFor();
  const link = await frame.getAttribute('src');
  // The attacker's link, opened and scanned by someone else in their own browser.
  const { page: victim } = await fresh(t);
  await victim.goto(link);
  await allowOnWeChat(victim, 'victim');
  await victim.getByText('This login must be finished in the browser that started it').waitFor();
  await shot(victim, 'relay-attack-refused');
  const view = await fetch(`${RELAY}/v1/login-sessions/${session.id}`, { headers: { authorization: `Bearer ${session.secret}` } })
    .then((r) => r.json());
  assert.equal(view.status, 'pending');
  assert.equal(view.ticket, undefined);
  await sees(page, 'Scan the QR code with WeChat to log in');
});

test('the sandbox page: widget, phone and backend, with nothing left of an old login', async (t) => {
  const { page } = await fresh(t, { viewport: { width: 1280, height: 820 } });
  await page.goto(`${RELAY}/sandbox`);
  await sees(page, 'Scan with WeChat to log in');
  const first = await page.locator('#session').textContent();
  await page.getByRole('button', { name: 'Scan', exact: true }).click();
  await sees(page, 'Scanned — confirm on your phone');
  await page.getByRole('button', { name: 'Confirm' }).click();
  await sees(page, 'Logged in');
  await page.waitForFunction(() => document.getElementById('ticket').value.includes('.'));
  await page.getByRole('button', { name: 'Redeem the ticket' }).click();
  await page.locator('#redeemed', { hasText: '"phone_number": "13800138000"' }).waitFor();
  await shot(page, 'sandbox-redeemed');
  // Another connection: a new session, and the old ticket and scan are gone.
  await page.selectOption('#connection', 'link');
  await page.waitForFunction((old) => {
    const id = document.getElementById('session').textContent;
    return id !== old && id !== '—';
  }, first);
  await sees(page, 'Scan with WeChat to log in');
  assert.equal(await page.inputValue('#ticket'), '');
  assert.equal(await page.locator('#redeemed').textContent(), '');
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.locator('#phonelog', { hasText: '"error": "not_scanned"' }).waitFor();
  await sees(page, 'Scan with WeChat to log in');
});

test('an unregistered redirect_uri gets an error page and no redirect', async (t) => {
  const { page } = await fresh(t);
  const bad = hostedUrl({ connection: 'default', state: 'x', redirect_uri: `${STRANGER}/callback.html` });
  const response = await page.goto(bad);
  assert.equal(response.status(), 400);
  assert.equal(page.url(), bad);
  await page.getByText('This login page cannot be opened').waitFor();
  assert.equal(await page.locator('.qrlogin-code').count(), 0);
  await shot(page, 'hosted-unregistered-redirect');
});
