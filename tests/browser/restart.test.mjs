// The gateway process dies (SIGKILL: no drain, no goodbye) and a new one is
// started on the same port: the page shows "reconnecting", keeps retrying
// with backoff, and goes live again with data from the new process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  apiStatus, mintToken, openBrowser, openLive, screenshot, startGateway, withDiagnostics, withoutNetworkNoise, T_LONG,
} from './helpers.mjs';

const SECRET = 'browser-restart-secret-0123456789abcdef';

test('the gateway restarting: "reconnecting", then live data from the new process', async (t) => {
  const token = mintToken({ secret: SECRET, sub: 'restart-user' });
  const first = await startGateway({ secret: SECRET });
  t.after(() => first.stop());
  let second = null;
  t.after(() => second && second.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  const gateways = [first];
  await withDiagnostics('restart', page, gateways, async () => {
    await openLive(page, first, token);
    const before = await apiStatus(first, token);
    await page.waitForSelector(`#status-strip li[data-key="replica"] >> text=${before.replica}`, { timeout: T_LONG });
    await page.waitForFunction(() => window.__dashboard.state().logsCount > 0, null, { timeout: T_LONG });
    const oldSession = await page.evaluate(() => window.__dashboard.state().session);
    assert.ok(oldSession, 'the page has a session id to resume');

    // Crash.
    await first.kill();
    await page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: T_LONG });
    assert.match(await page.textContent('#conn-state'), /^reconnecting \(attempt \d+/);
    assert.equal(await page.getAttribute('body', 'data-conn'), 'reconnecting');
    // It keeps trying while the port is closed (a failed attempt schedules the next).
    await page.waitForFunction(() => window.__dashboard.state().attempt >= 2, null, { timeout: T_LONG });
    assert.equal(await page.isVisible('#reconnect-btn'), true, '"Reconnect now" is offered while reconnecting');
    await screenshot(page, 'restart-reconnecting');

    // A new process on the same port (same secret, so the token stays good).
    const restartedAt = Date.now();
    second = await startGateway({ secret: SECRET, port: first.port });
    gateways.push(second);
    const after = await apiStatus(second, token);
    assert.notEqual(after.replica, before.replica);

    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    assert.equal(await page.isVisible('#reconnect-btn'), false);
    // Quotes from the new process reach the table, and keep changing.
    await page.waitForFunction((t0) => Object.values(window.__dashboard.state().quotes)
      .filter((q) => Date.parse(q.timestamp) > t0).length >= 3, restartedAt, { timeout: T_LONG });
    const bids = await page.$$eval('#quotes tbody tr[data-symbol]', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.symbol, tr.querySelector('.bid').textContent])));
    await page.waitForFunction((was) => [...document.querySelectorAll('#quotes tbody tr[data-symbol]')]
      .some((tr) => tr.querySelector('.bid').textContent !== was[tr.dataset.symbol]), bids, { timeout: T_LONG });
    // Logs from the new process (its seq restarted from 1) are shown, not dropped as old.
    await page.waitForFunction((t0) => [...document.querySelectorAll('#logs li time')]
      .some((n) => Date.parse(n.dateTime) > t0), restartedAt, { timeout: T_LONG });
    // The new process did not know the old session: the page says so.
    const st = await page.evaluate(() => window.__dashboard.state());
    assert.equal(st.connection, 'live');
    assert.equal(st.resumed, false);
    assert.notEqual(st.session, oldSession);
    await page.waitForSelector('.toast >> text=new session', { state: 'attached', timeout: T_LONG });
    // The status strip follows the new replica.
    await page.waitForSelector(`#status-strip li[data-key="replica"] >> text=${after.replica}`, { timeout: T_LONG });

    // While the gateway was down Chromium logged the refused connections; nothing else.
    const real = withoutNetworkNoise(problems);
    assert.deepEqual(real, [], `console errors/warnings or page errors:\n${real.join('\n')}`);
  });
});
