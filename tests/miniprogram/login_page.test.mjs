// The reference mini-program's pages (miniprogram-contract/), their real code run under the `wx`
// stand-in of wx.mjs against a real sandbox relay over HTTP, while the PC waits on a real
// WebSocket. Started by the Rust test `miniprogram_page` with RELAY and WECHAT set.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ROOT, leaveAll, loadPage, makeWx, tapPhoneButton, until } from './wx.mjs';

const requireFile = createRequire(import.meta.url);

const RELAY = process.env.RELAY;
const WECHAT = process.env.WECHAT;
const config = { RELAY, SANDBOX: null };

/** A PC browser: starts a login and waits on its WebSocket. */
async function startLogin(connection = 'default') {
  const res = await fetch(`${RELAY}/v1/login-sessions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ connection }),
  });
  assert.equal(res.status, 201);
  const { id, secret } = await res.json();
  const socket = new WebSocket(`${RELAY.replace(/^http/, 'ws')}/v1/login-sessions/${id}/ws`);
  const seen = [];
  socket.addEventListener('message', (e) => seen.push(JSON.parse(e.data)));
  await new Promise((resolve, reject) => {
    socket.addEventListener('open', resolve);
    socket.addEventListener('error', reject);
  });
  socket.send(JSON.stringify({ type: 'auth', secret }));
  return {
    id,
    seen,
    /** The first pushed state with this status. */
    async pushed(status) {
      await until(() => seen.some((m) => m.status === status), () => `a pushed "${status}", got ${JSON.stringify(seen)}`);
      return seen.find((m) => m.status === status);
    },
    close: () => socket.close(),
  };
}

// Whatever a test left open is left now, so no countdown outlives its test.
afterEach(leaveAll);

function view(page) {
  return () => `view, data is ${JSON.stringify(page.data)}`;
}

async function scanned(login, wx, conf = config) {
  const page = loadPage('login', wx, conf);
  page.onLoad({ scene: encodeURIComponent(login.id) });
  await until(() => page.data.view !== 'checking', view(page));
  return page;
}

test('happy path: scan, confirm screen, phone, and the waiting PC is pushed its ticket', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-alice' });
  const page = await scanned(pc, wx);
  assert.equal(page.data.view, 'confirm', JSON.stringify(page.data));
  // The confirm screen: the tenant, the requesting computer in words, a countdown.
  assert.equal(page.data.session.display_name, 'Sandbox Mini Program');
  assert.match(page.data.session.logo_url, /\/v1\/connections\/default\/logo$/);
  assert.equal(page.data.session.client.ip, '127.0.0.1');
  assert.ok(page.data.session.client.browser, 'a readable browser/OS');
  assert.match(page.data.remaining, /^\d+:\d\d$/);
  assert.equal(page.data.t.confirm, '用手机号确认登录');
  await pc.pushed('scanned');

  // WeChat asks for privacy consent first; the page shows its prompt and the person agrees.
  const tapped = tapPhoneButton(wx, page, { wechat: WECHAT, phone: '13912345678' });
  await until(() => page.data.privacy, view(page));
  assert.equal(page.data.privacy.contract, '《示例隐私保护指引》');
  page.onPrivacyAgree({ currentTarget: { id: 'agree-privacy' } });
  await tapped;
  await until(() => page.data.view === 'done', view(page));
  assert.equal(page.data.privacy, null);

  const confirmed = await pc.pushed('confirmed');
  const redeemed = await fetch(`${RELAY}/v1/tickets/redeem`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer sandbox' },
    body: JSON.stringify({ ticket: confirmed.ticket }),
  }).then((r) => r.json());
  assert.equal(redeemed.user.pure_phone_number, '13912345678');
  assert.ok(redeemed.id_token);
  page.onUnload();
  pc.close();
});

test('a link QR code: the scene is the last segment of options.q', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-link', enterScene: 1011 });
  const page = loadPage('login', wx, config);
  page.onLoad({ q: encodeURIComponent(`https://login.example.com/q/${pc.id}`) });
  await until(() => page.data.view === 'confirm', view(page));
  await pc.pushed('scanned');
  page.onUnload();
  pc.close();
});

test('cancel: the PC is told at once', async () => {
  const pc = await startLogin();
  const page = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-bob' }));
  page.onCancel();
  await until(() => page.data.view === 'cancelled', view(page));
  await pc.pushed('cancelled');
  pc.close();
});

test('refusing the phone prompt offers retry or cancel, and the retry logs in', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-carol' });
  wx.privacyAgreed = true;
  const page = await scanned(pc, wx);
  await tapPhoneButton(wx, page, { allow: false, wechat: WECHAT });
  assert.equal(page.data.view, 'phone_refused');
  assert.equal(page.data.t.phoneRefused, '需要你的手机号才能登录');
  assert.ok(!pc.seen.some((m) => m.status === 'confirmed' || m.status === 'cancelled'));
  await tapPhoneButton(wx, page, { wechat: WECHAT });
  await until(() => page.data.view === 'done', view(page));
  await pc.pushed('confirmed');
  pc.close();
});

test('declining the privacy prompt is a refusal too', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-dan' });
  const page = await scanned(pc, wx);
  const tapped = tapPhoneButton(wx, page, { wechat: WECHAT });
  await until(() => page.data.privacy, view(page));
  page.onPrivacyDisagree();
  await tapped;
  assert.equal(page.data.view, 'phone_refused');
  page.onUnload();
  await pc.pushed('cancelled');
  pc.close();
});

test('expired: the countdown ends on the expired screen and the relay agrees', async () => {
  const pc = await startLogin('short');
  const wx = makeWx({ wechat: WECHAT, user: 'mp-erin' });
  const page = await scanned(pc, wx);
  assert.equal(page.data.view, 'confirm');
  await until(() => page.data.view === 'expired', view(page), 10000);
  assert.equal(page.data.t.expired, '登录码已过期');
  pc.close();
  // Scanning it now lands on the same screen, from the relay's answer.
  const late = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-erin' }));
  assert.equal(late.data.view, 'expired', JSON.stringify(late.data));
});

test('taken by another WeChat user: the second person is told, without a retry', async () => {
  const pc = await startLogin();
  const first = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-frank' }));
  assert.equal(first.data.view, 'confirm');
  const second = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-grace' }));
  assert.equal(second.data.view, 'error');
  assert.equal(second.data.message, '这个登录码已被其他微信用户扫描。请在电脑上刷新后重新扫码。');
  assert.equal(second.data.retry, '');
  second.onUnload();
  // The first scanner is untouched by the second one leaving.
  assert.ok(!pc.seen.some((m) => m.status === 'cancelled'));
  first.onUnload();
  await pc.pushed('cancelled');
  pc.close();
});

test('a forwarded code (scene 1049) is refused with words, and the PC stays waiting', async () => {
  const pc = await startLogin();
  const page = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-heidi', enterScene: 1049 }));
  assert.equal(page.data.view, 'error');
  assert.equal(page.data.message, '请直接扫描电脑屏幕上的码，不要使用转发或保存的图片。');
  assert.ok(!pc.seen.some((m) => m.status === 'scanned'));
  pc.close();
});

test('a hot start from a forwarded image is refused though the launch scene was a camera scan', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-ivan', launchScene: 1047, enterScene: 1048 });
  const page = await scanned(pc, wx);
  assert.equal(page.data.view, 'error');
  assert.match(page.data.message, /转发/);
  pc.close();
});

test('leaving the page before confirming cancels the login', async () => {
  const pc = await startLogin();
  const page = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-judy' }));
  page.onUnload();
  await pc.pushed('cancelled');
  pc.close();
});

test('leaving while the scan is on its way still cancels it', async () => {
  const pc = await startLogin();
  const page = loadPage('login', makeWx({ wechat: WECHAT, user: 'mp-quick' }), config);
  page.onLoad({ scene: encodeURIComponent(pc.id) });
  page.onUnload();
  await pc.pushed('cancelled');
  pc.close();
});

test('WeChat busy on the phone number: a retry with a new phone code logs in', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-kim' });
  wx.privacyAgreed = true;
  const page = await scanned(pc, wx);
  await fetch(`${WECHAT}/_sim/fail-next`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ api: 'getuserphonenumber', errcode: -1 }),
  });
  await tapPhoneButton(wx, page, { wechat: WECHAT });
  await until(() => page.data.view === 'error', view(page));
  assert.equal(page.data.message, '微信繁忙，请稍后重试。');
  assert.equal(page.data.retry, 'phone');
  await tapPhoneButton(wx, page, { wechat: WECHAT });
  await until(() => page.data.view === 'done', view(page));
  await pc.pushed('confirmed');
  pc.close();
});

test('no network: the message says so and the retry scans again', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'mp-leo' });
  const page = await scanned(pc, wx, { RELAY: 'http://127.0.0.1:9', SANDBOX: null });
  assert.equal(page.data.view, 'error');
  assert.equal(page.data.message, '网络不可用，请检查网络后重试。');
  assert.equal(page.data.retry, 'scan');
  // The network is back.
  Object.assign(requireFile(path.join(ROOT, 'config.js')), config);
  page.onRetry();
  await until(() => page.data.view === 'confirm', view(page));
  await pc.pushed('scanned');
  page.onUnload();
  pc.close();
});

test('in English when WeChat is, relay errors in words too', async () => {
  const pc = await startLogin();
  await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-mia' }));
  const page = await scanned(pc, makeWx({ wechat: WECHAT, user: 'mp-nina', language: 'en' }));
  assert.equal(page.data.t.confirm, 'Confirm with my phone number');
  assert.equal(page.data.message, 'Someone else already scanned this code. Refresh it on the computer and scan again.');
  pc.close();
});

test('sandbox mode: codes come from the simulator, never wx.login or the phone button', async () => {
  const pc = await startLogin();
  const wx = makeWx({ wechat: WECHAT, user: 'unused' });
  const sandbox = { RELAY, SANDBOX: { wechat: WECHAT, user: 'owner', phone: '13700000001' } };
  const page = await scanned(pc, wx, sandbox);
  assert.equal(page.data.view, 'confirm', JSON.stringify(page.data));
  assert.equal(page.data.sandbox, true);
  page.onSandboxPhone();
  await until(() => page.data.view === 'done', view(page));
  assert.equal(wx.loginCalls, 0);
  const confirmed = await pc.pushed('confirmed');
  assert.ok(confirmed.ticket);
  pc.close();
});

test('opened without a code: the login page sends people to the index page, which explains', async () => {
  const wx = makeWx({ wechat: WECHAT, user: 'mp-olga' });
  const login = loadPage('login', wx, config);
  login.onLoad({});
  assert.deepEqual(wx.navigations, [['reLaunch', '/pages/index/index']]);
  const index = loadPage('index', wx, config);
  index.onLoad({});
  assert.equal(index.data.t.indexTitle, '在电脑上用微信登录');
  assert.equal(index.data.t.indexSteps.length, 3);
  // The index page given a code hands it to the login page.
  const handed = loadPage('index', wx, config);
  handed.onLoad({ scene: 'abc' });
  assert.deepEqual(wx.navigations.at(-1), ['redirectTo', '/pages/login/login?scene=abc']);
});

const text = requireFile(path.join(ROOT, 'utils/text.js'));

test('the project files: every page in app.json exists, every binding has its handler, every text both languages', () => {
  const json = (file) => JSON.parse(fs.readFileSync(path.join(ROOT, file), 'utf8'));
  const app = json('app.json');
  const project = json('project.config.json');
  json('sitemap.json');
  assert.equal(app.pages[0], 'pages/index/index', 'the first page explains; it never needs a code');
  assert.ok(app.pages.includes('pages/login/login'));
  assert.equal(project.appid, 'touristappid', 'a placeholder AppID, never a real-looking one');
  const wx = makeWx({ wechat: WECHAT, user: 'files' });
  for (const page of app.pages) {
    for (const ext of ['js', 'wxml', 'json', 'wxss']) {
      assert.ok(fs.existsSync(path.join(ROOT, `${page}.${ext}`)), `${page}.${ext}`);
    }
    json(`${page}.json`);
    const name = path.basename(page);
    const instance = loadPage(name, wx, config);
    const wxml = fs.readFileSync(path.join(ROOT, `${page}.wxml`), 'utf8');
    for (const [, handler] of wxml.matchAll(/bind[a-z]+="(\w+)"/g)) {
      assert.equal(typeof instance[handler], 'function', `${page}.wxml binds ${handler}`);
    }
    for (const [, key] of wxml.matchAll(/\bt\.(\w+)/g)) {
      for (const lang of ['zh', 'en']) assert.ok(text.strings(lang)[key], `${lang} text for t.${key} in ${page}.wxml`);
    }
  }
  assert.deepEqual(Object.keys(text.strings('zh')).sort(), Object.keys(text.strings('en')).sort());
  for (const [code, entry] of Object.entries(text.ERRORS)) {
    assert.ok(entry.zh && entry.en, `both languages for ${code}`);
  }
});

test('every error code the relay documents for the mini-program has words in both languages', () => {
  const spec = JSON.parse(fs.readFileSync(path.join(ROOT, 'openapi.json'), 'utf8'));
  const codes = new Set();
  for (const [route, item] of Object.entries(spec.paths)) {
    if (!route.startsWith('/v1/mp/')) continue;
    for (const response of Object.values(item.post.responses)) {
      const schema = response.content?.['application/json']?.schema;
      for (const part of schema?.allOf ?? []) part.properties?.error?.enum?.forEach((c) => codes.add(c));
    }
  }
  assert.ok(codes.size > 20, `codes found: ${[...codes]}`);
  const missing = [...codes].filter((c) => !text.ERRORS[c]);
  assert.deepEqual(missing, [], 'codes without words in utils/text.js');
});
