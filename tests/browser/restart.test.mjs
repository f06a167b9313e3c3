// A relay instance stops (SIGTERM) while a hosted page waits on it: the page is told to
// reconnect (close 1012), reaches the other instance through the load balancer (RELAY), and
// the login completes there. Started by tests/api/browser.rs with RELAY (the balancer),
// WECHAT (the simulator), SITE, SHOTS and STOPPING_PID (the instance the page reaches first).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, freshPage, scanAs, confirm, redeem, nextSession } from './relay.mjs';

const { RELAY, SITE, SHOTS, STOPPING_PID } = process.env;
const CALLBACK = `${SITE}/callback.html`;

let browser;
before(async () => {
  browser = await launch();
});
after(() => browser.close());

/** The next WebSocket the page opens, once the relay has sent it a frame. */
function nextSocket(page) {
  return new Promise((resolve) => {
    page.once('websocket', (socket) => {
      const closed = new Promise((done) => socket.on('close', done));
      socket.once('framereceived', (frame) => resolve({ socket, first: JSON.parse(frame.payload), closed }));
    });
  });
}

test('a page waiting on a stopping instance reconnects to another and logs in there', async (t) => {
  const { context, page } = await freshPage(browser, t);
  // Records the close code of every socket the page sees end.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.closeCodes = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener('close', (event) => window.closeCodes.push(event.code));
      }
    };
  });
  const created = nextSession(context);
  const firstSocket = nextSocket(page);
  await page.goto(`${RELAY}/login?${new URLSearchParams({ redirect_uri: CALLBACK })}`);
  const session = await created;
  const first = await firstSocket;
  assert.equal(first.first.status, 'pending');

  const secondSocket = nextSocket(page);
  process.kill(Number(STOPPING_PID), 'SIGTERM');
  await first.closed;
  const second = await secondSocket;
  assert.equal(second.first.status, 'pending', 'the new socket reads the same session');
  assert.deepEqual(await page.evaluate(() => window.closeCodes), [1012], 'told to reconnect: service restart');
  await page.locator('.qrlogin-status', { hasText: 'Scan with WeChat to log in' }).waitFor();
  await page.screenshot({ path: `${SHOTS}/restart-reconnected.png` });

  const scan = await scanAs(session, 'ursula');
  await confirm(session, scan.scan_token, 'ursula');
  await page.waitForURL((url) => url.href.startsWith(CALLBACK));
  const received = JSON.parse(await page.locator('#received').textContent());
  const redeemed = await redeem(received.ticket);
  assert.equal(redeemed.status, 200, JSON.stringify(redeemed.body));
  assert.equal(redeemed.body.user.phone_number, '13800138000');
});
