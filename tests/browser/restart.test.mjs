// The gateway restarts on the same port, first gracefully (SIGTERM: it says
// "Server shutdown" and drains), then after a crash (SIGKILL: no goodbye).
// Both times the page shows "reconnecting", keeps retrying with backoff, and
// goes live again with data from the new process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  apiStatus, mintToken, openBrowser, openLive, screenshot, startGateway, withDiagnostics, withoutNetworkNoise, T_LONG,
} from './helpers.mjs';

const SECRET = 'browser-restart-secret-0123456789abcdef';

/** The page is live on `gw` (started at `since`): its quotes, logs and status strip. */
async function liveAgain(page, gw, token, since, oldSession) {
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
  assert.equal(await page.isVisible('#reconnect-btn'), false);
  // Quotes from the new process reach the table, and keep changing.
  await page.waitForFunction((t0) => Object.values(window.__dashboard.state().quotes)
    .filter((q) => Date.parse(q.timestamp) > t0).length >= 3, since, { timeout: T_LONG });
  const bids = await page.$$eval('#quotes tbody tr[data-symbol]', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.symbol, tr.querySelector('.bid').textContent])));
  await page.waitForFunction((was) => [...document.querySelectorAll('#quotes tbody tr[data-symbol]')]
    .some((tr) => tr.querySelector('.bid').textContent !== was[tr.dataset.symbol]), bids, { timeout: T_LONG });
  // Logs from the new process (whose seq restarted from 1) are shown, not dropped as old.
  await page.waitForFunction((t0) => [...document.querySelectorAll('#logs li time')]
    .some((n) => Date.parse(n.dateTime) > t0), since, { timeout: T_LONG });
  // The new process did not know the old session: the page says so.
  const st = await page.evaluate(() => window.__dashboard.state());
  assert.equal(st.connection, 'live');
  assert.equal(st.resumed, false);
  assert.ok(st.session && st.session !== oldSession, 'a new session');
  await page.waitForSelector('.toast >> text=new session', { state: 'attached', timeout: T_LONG });
  // The status strip follows the new replica.
  const { replica } = await apiStatus(gw, token);
  await page.waitForSelector(`#status-strip li[data-key="replica"] >> text=${replica}`, { timeout: T_LONG });
  return st.session;
}

test('the gateway restarting (SIGTERM, then SIGKILL): "reconnecting", then live data from the new process', async (t) => {
  const token = mintToken({ secret: SECRET, sub: 'restart-user' });
  const gateways = [await startGateway({ secret: SECRET })];
  t.after(() => Promise.all(gateways.map((g) => g.stop())));
  const port = gateways[0].port;
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('restart', page, gateways, async () => {
    await openLive(page, gateways[0], token);
    const first = await apiStatus(gateways[0], token);
    await page.waitForSelector(`#status-strip li[data-key="replica"] >> text=${first.replica}`, { timeout: T_LONG });
    await page.waitForFunction(() => window.__dashboard.state().logsCount > 0, null, { timeout: T_LONG });
    let session = await page.evaluate(() => window.__dashboard.state().session);
    assert.ok(session, 'the page has a session id to resume');

    // 1. Graceful: the gateway says goodbye, drains and exits.
    await gateways[0].stop();
    assert.equal(gateways[0].exited().code, 0);
    await page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: T_LONG });
    await page.waitForSelector('.toast >> text=Disconnected: Server shutdown (reconnecting)', { state: 'attached', timeout: T_LONG });
    let since = Date.now();
    gateways.push(await startGateway({ secret: SECRET, port }));
    session = await liveAgain(page, gateways[1], token, since, session);

    // 2. Crash: the connection just drops.
    await gateways[1].kill();
    await page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: T_LONG });
    assert.match(await page.textContent('#conn-state'), /^reconnecting \(attempt \d+/);
    assert.equal(await page.getAttribute('body', 'data-conn'), 'reconnecting');
    // It keeps trying while the port is closed (a failed attempt schedules the next).
    await page.waitForFunction(() => window.__dashboard.state().attempt >= 2, null, { timeout: T_LONG });
    assert.equal(await page.isVisible('#reconnect-btn'), true, '"Reconnect now" is offered while reconnecting');
    // The status strip does not keep showing the dead replica.
    await page.waitForSelector('#status-strip[data-available="false"]', { timeout: T_LONG });
    await screenshot(page, 'restart-reconnecting');
    since = Date.now();
    gateways.push(await startGateway({ secret: SECRET, port }));
    await liveAgain(page, gateways[2], token, since, session);

    // While the gateway was down Chromium logged the refused connections; nothing else.
    const real = withoutNetworkNoise(problems);
    assert.deepEqual(real, [], `console errors/warnings or page errors:\n${real.join('\n')}`);
  });
});
