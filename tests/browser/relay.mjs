// What the browser tests share: Chromium, a fresh browser per test, and the phone and website
// backend as plain HTTP against the relay (RELAY) and its WeChat simulator (WECHAT).
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const { RELAY, WECHAT, CHROMIUM } = process.env;

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A new browser (its own cookies and storage) with one page; fails the test on script errors
 * and Content-Security-Policy violations. */
export async function freshPage(browser, t, options = {}) {
  const context = await browser.newContext({ viewport: { width: 760, height: 640 }, ...options });
  const page = await context.newPage();
  const problems = [];
  context.on('weberror', (e) => problems.push(String(e.error())));
  context.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) problems.push(m.text());
  });
  t.after(async () => {
    await context.close();
    assert.deepEqual(problems, [], 'no script errors or CSP violations');
  });
  return { context, page };
}

export async function call(method, url, body, headers = {}) {
  const response = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

export async function mint(kind, body) {
  return (await call('POST', `${WECHAT}/_sim/${kind}`, body)).body.code;
}

/** The phone scans the session's code as `user`: the scan's answer. */
export async function scanAs(session, user) {
  const answer = await call('POST', `${RELAY}/v1/mp/scan`,
    { scene: session.id, login_code: await mint('login-code', { user }), launch_scene: 1047 });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

export async function confirm(session, scanToken, user) {
  const phone_code = await mint('phone-code', { user, phone: '13800138000' });
  const answer = await call('POST', `${RELAY}/v1/mp/confirm`, { scene: session.id, scan_token: scanToken, phone_code });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

export async function cancel(session, scanToken) {
  const answer = await call('POST', `${RELAY}/v1/mp/cancel`, { scene: session.id, scan_token: scanToken });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

/** The website backend redeems a ticket. */
export async function redeem(ticket) {
  return call('POST', `${RELAY}/v1/tickets/redeem`, { ticket }, { authorization: 'Bearer sandbox' });
}

export const isCreate = (response) => response.url() === `${RELAY}/v1/login-sessions` && response.request().method() === 'POST';

/** The next login session any page of the context starts (the create response). */
export function nextSession(context) {
  return context.waitForEvent('response', { predicate: isCreate }).then((r) => r.json());
}
