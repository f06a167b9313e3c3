// The OpenID Connect face driven by openid-client (a certified relying-party library we did not
// write): discovery, authorization with PKCE and nonce, the hosted page in headless Chromium,
// the phone through the simulator, the code exchange, the library's own ID-token validation
// (JWKS signature, iss, aud, exp, nonce, at_hash) and userinfo. Started by tests/api/browser.rs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { launch, freshPage, call, mint, scanAs, confirm, cancel, nextSession } from './relay.mjs';

const { RELAY, SITE, SHOTS } = process.env;
const CALLBACK = `${SITE}/callback.html`;
const insecure = { execute: [client.allowInsecureRequests] }; // the test relay speaks plain HTTP

let browser;
before(async () => {
  browser = await launch();
});
after(() => browser.close());

/** The website's OIDC configuration: a confidential client (a backend credential) or a public one. */
function configure(clientId = 'default', auth = client.ClientSecretBasic('sandbox')) {
  return client.discovery(new URL(RELAY), clientId, undefined, auth, insecure);
}

/** Authorization parameters with PKCE, state and nonce, and what the callback must match. */
async function authorizationRequest(extra = {}) {
  const verifier = client.randomPKCECodeVerifier();
  const checks = { pkceCodeVerifier: verifier, expectedState: client.randomState(), expectedNonce: client.randomNonce() };
  const params = {
    redirect_uri: CALLBACK,
    scope: 'openid phone profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: checks.expectedState,
    nonce: checks.expectedNonce,
    ...extra,
  };
  return { params, checks };
}

/**
 * A person's browser goes to the authorization URL; the phone scans the hosted page's code and
 * confirms (or cancels); the browser lands back on the site. Answers the page on the callback.
 */
async function signIn(t, config, params, { user = 'oidc-alice', phone = 'confirm', shotName } = {}) {
  const { context, page } = await freshPage(browser, t);
  const created = nextSession(context);
  await page.goto(client.buildAuthorizationUrl(config, params).href);
  const session = await created;
  await page.locator('.qrlogin-code img, .qrlogin-code').first().waitFor();
  if (shotName) await page.screenshot({ path: `${SHOTS}/${shotName}.png` });
  const scanned = await scanAs(session, user);
  if (phone === 'confirm') await confirm(session, scanned.scan_token, user);
  else if (phone === 'cancel') await cancel(session, scanned.scan_token);
  else {
    // The connection's account hook refuses the person at confirm.
    const phone_code = await mint('phone-code', { user, phone: '13800138000' });
    const refused = await call('POST', `${RELAY}/v1/mp/confirm`, { scene: session.id, scan_token: scanned.scan_token, phone_code });
    assert.equal(refused.body.error, 'account_denied');
  }
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  return page;
}

test('openid-client: discovery, PKCE + nonce, hosted page, code, validated ID token, userinfo', async (t) => {
  const config = await configure();
  const metadata = config.serverMetadata();
  assert.equal(metadata.issuer, RELAY);
  assert.deepEqual(metadata.response_types_supported, ['code']);
  assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);

  const { params, checks } = await authorizationRequest();
  const page = await signIn(t, config, params, { shotName: 'oidc-hosted-page' });
  const callback = new URL(page.url());
  assert.equal(callback.searchParams.get('iss'), RELAY);

  // The library checks state, iss, the code exchange, and the ID token (JWKS signature, iss,
  // aud, exp, iat, nonce, at_hash); any mismatch throws.
  const tokens = await client.authorizationCodeGrant(config, callback, checks, undefined, insecure);
  assert.equal(tokens.token_type.toLowerCase(), 'bearer');
  assert.ok(tokens.expires_in > 0);
  const claims = tokens.claims();
  assert.equal(claims.aud, 'default');
  assert.equal(claims.nonce, checks.expectedNonce);
  assert.equal(claims.phone_number, '13800138000');
  assert.ok(claims.openid);

  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub, insecure);
  assert.equal(info.sub, claims.sub);
  assert.equal(info.phone_number, '13800138000');
  assert.equal(info.phone_number_verified, true);
  assert.equal(info.openid, claims.openid);

  // The code works once.
  await assert.rejects(client.authorizationCodeGrant(config, callback, checks, undefined, insecure),
    (e) => e.error === 'invalid_grant');
});

test('a wrong PKCE verifier is invalid_grant', async (t) => {
  const config = await configure();
  const { params, checks } = await authorizationRequest();
  const page = await signIn(t, config, params, { user: 'oidc-bob' });
  const wrong = { ...checks, pkceCodeVerifier: client.randomPKCECodeVerifier() };
  await assert.rejects(client.authorizationCodeGrant(config, new URL(page.url()), wrong, undefined, insecure),
    (e) => e.error === 'invalid_grant');
});

test('a wrong client secret is invalid_client (401)', async (t) => {
  const config = await configure('default', client.ClientSecretPost('not-the-secret'));
  const { params, checks } = await authorizationRequest();
  const page = await signIn(t, config, params, { user: 'oidc-carol' });
  const refused = await client.authorizationCodeGrant(config, new URL(page.url()), checks, undefined, insecure)
    .then(() => null, (e) => e);
  // A 401 with a Basic challenge (RFC 6749 §5.2), which the library reports as such.
  assert.equal(refused?.status, 401);
  assert.equal(refused.cause[0].scheme, 'basic');
  assert.equal((await refused.response.json()).error, 'invalid_client');
});

test('a public client logs in with PKCE and no secret, and is refused without PKCE', async (t) => {
  const config = await configure('spa', client.None());
  const { params, checks } = await authorizationRequest();
  const page = await signIn(t, config, params, { user: 'oidc-dan' });
  const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), checks, undefined, insecure);
  assert.equal(tokens.claims().aud, 'spa');

  const { context, page: other } = await freshPage(browser, t);
  const withoutPkce = { redirect_uri: CALLBACK, scope: 'openid', state: 'no-pkce' };
  await other.goto(client.buildAuthorizationUrl(config, withoutPkce).href);
  const back = new URL(other.url());
  assert.equal(back.origin + back.pathname, CALLBACK);
  assert.equal(back.searchParams.get('error'), 'invalid_request');
  assert.equal(back.searchParams.get('state'), 'no-pkce');
  await context.close();
});

test('a cancel on the phone comes back as access_denied', async (t) => {
  const config = await configure();
  const { params, checks } = await authorizationRequest();
  const page = await signIn(t, config, params, { user: 'oidc-erin', phone: 'cancel' });
  const callback = new URL(page.url());
  assert.equal(callback.searchParams.get('error'), 'access_denied');
  await assert.rejects(client.authorizationCodeGrant(config, callback, checks, undefined, insecure),
    (e) => e.error === 'access_denied');
});

test('an account-hook refusal comes back as access_denied', async (t) => {
  const config = await configure('members');
  const { params } = await authorizationRequest();
  const page = await signIn(t, config, params, { user: 'oidc-stranger', phone: 'refused by the hook' });
  assert.equal(new URL(page.url()).searchParams.get('error'), 'access_denied');
});

test('form_post mode posts the code, state and iss to the callback', async (t) => {
  const config = await configure();
  const { params, checks } = await authorizationRequest({ response_mode: 'form_post' });
  const page = await signIn(t, config, params, { user: 'oidc-frank' });
  // The test site's callback shows what it was posted.
  const posted = JSON.parse(await page.locator('#received').textContent());
  assert.equal(posted.state, checks.expectedState);
  assert.equal(posted.iss, RELAY);
  const request = new Request(CALLBACK, { method: 'POST', body: new URLSearchParams(posted) });
  const tokens = await client.authorizationCodeGrant(config, request, checks, undefined, insecure);
  assert.equal(tokens.claims().nonce, checks.expectedNonce);
});

test('the website-app tab, through WeChat\'s page and back, ends at the client with a code', async (t) => {
  const config = await configure();
  const { params, checks } = await authorizationRequest({ scope: 'openid profile' });
  const { page } = await freshPage(browser, t);
  await page.goto(client.buildAuthorizationUrl(config, params).href);
  await page.getByRole('tab', { name: 'WeChat QR login' }).click();
  await page.frameLocator('.qrlogin-frame').getByRole('button', { name: 'Scan and allow' }).waitFor();
  await page.getByRole('button', { name: /Open WeChat login in this window/ }).click();
  await page.waitForURL((url) => url.href.includes('/connect/qrconnect?'));
  await page.locator('input[name="user"]').fill('oidc-web');
  await page.getByRole('button', { name: 'Scan and allow' }).click();
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const tokens = await client.authorizationCodeGrant(config, new URL(page.url()), checks, undefined, insecure);
  assert.deepEqual(tokens.claims().amr, ['wechat_website']);
  const info = await client.fetchUserInfo(config, tokens.access_token, tokens.claims().sub, insecure);
  assert.ok(info.nickname, 'profile scope: the website app gives a nickname');
});

test('an unregistered redirect_uri gets the relay\'s error page, never a redirect', async (t) => {
  const config = await configure();
  const { params } = await authorizationRequest({ redirect_uri: `${SITE}/elsewhere.html` });
  const { page } = await freshPage(browser, t);
  const response = await page.goto(client.buildAuthorizationUrl(config, params).href);
  assert.equal(response.status(), 400);
  assert.ok(page.url().startsWith(`${RELAY}/oauth2/authorize`));
  await page.screenshot({ path: `${SHOTS}/oidc-unregistered-redirect.png` });
  await page.locator('text=redirect_uri').first().waitFor();
});
