// The page's WebSocket goes through a Playwright route (a proxy in the test)
// to the real gateway, so the test can cut the connection, refuse a reconnect
// attempt or rewrite a frame.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fmtMoney, openBrowser, openLive, pageLogSeqs, startGateway, waitFor, watcher, withDiagnostics, T_LONG,
} from './helpers.mjs';

const isWs = (url) => url.pathname === '/ws';

test('a dropped connection resumes its session: no log entry or signal is missed or shown twice', async (t) => {
  // The drop below closes the page's side only: the gateway keeps writing
  // into the test's proxy for a moment without knowing the page is gone (a
  // black hole), and with the default 0.3 s settle counts some of those
  // entries as delivered. The page resumes from the last seq it holds
  // (last_logs/last_signals), so none is lost (README: delivery).
  const gw = await startGateway({ env: { SIM_LOGS_PER_SEC: '20', SIM_SIGNALS_PER_SEC: '4' } });
  t.after(() => gw.stop());
  const w = watcher(gw.url, gw.token);
  t.after(() => w.close());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  const conns = [];
  let refuse = 0;
  await page.routeWebSocket(isWs, (ws) => {
    if (refuse > 0) {          // an outage: the attempt fails
      refuse--;
      ws.close({ code: 1011, reason: 'test outage' });
      return;
    }
    const c = { url: new URL(ws.url()), ws, server: ws.connectToServer(), events: {}, last: {} };
    c.server.onMessage((m) => {
      try {
        const f = JSON.parse(String(m));
        c.events[f.event] = (c.events[f.event] || 0) + 1;
        c.last[f.event] = f.data;
      } catch { /* counted as nothing */ }
      c.ws.send(m);
    });
    conns.push(c);
  });

  await withDiagnostics('resume', page, [gw], async () => {
    await waitFor(() => w.connected && w.logs.length > 0, { message: 'the socket.io client to receive logs' });
    await openLive(page, gw);
    const sigFrom = w.signalOrder.length;   // signals from here on must all reach the page
    await page.waitForFunction(() => document.querySelectorAll('#logs li[data-seq]').length >= 10, null, { timeout: T_LONG });
    const before = await page.evaluate(() => window.__dashboard.state());
    assert.ok(before.session);
    assert.equal(conns.length, 1);
    assert.equal(conns[0].url.searchParams.get('session'), null, 'a fresh page does not ask for a session');

    // Cut the connection, and let the first reconnect attempt fail too.
    refuse = 1;
    const logsAtDrop = w.logs.length;
    await conns[0].ws.close({ code: 4000, reason: 'test drop' });
    await page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: T_LONG });
    await waitFor(() => refuse === 0, { message: 'a reconnect attempt (refused)' });
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    assert.ok(w.logs.length - logsAtDrop >= 3, `entries were produced during the outage (${w.logs.length - logsAtDrop})`);

    // The page asked for its session back and got it.
    assert.equal(conns.length, 2);
    assert.equal(conns[1].url.searchParams.get('session'), before.session);
    const after = await page.evaluate(() => window.__dashboard.state());
    assert.equal(after.session, before.session);
    assert.equal(after.resumed, true);
    assert.equal(await page.textContent('#conn-detail'), 'session resumed');

    // State channels flow again on the resumed session, and the page shows them.
    await waitFor(() => ['quotes', 'positions_update', 'orders_update', 'account_update'].every((e) => conns[1].events[e] > 0),
      { message: `quotes, positions, orders and account on the resumed connection (got ${JSON.stringify(conns[1].events)})` });
    await waitFor(async () => {
      const equity = await page.textContent('#account .equity');
      const a = conns[1].last.account_update;
      return equity === fmtMoney(a.equity);
    }, { message: 'the account of the resumed connection on the page' });

    // Wait until the page is past what the client had a moment after the resume.
    const target = w.logs[w.logs.length - 1].seq;
    await page.waitForFunction((s) => [...document.querySelectorAll('#logs li[data-seq]')].some((li) => Number(li.dataset.seq) >= s),
      target, { timeout: T_LONG });
    const pageSeqs = await pageLogSeqs(page);
    const pageSet = new Set(pageSeqs);
    assert.equal(pageSet.size, pageSeqs.length, 'a log entry shown twice');
    const lo = Math.min(...pageSeqs);
    const missing = w.logSeqs().filter((s) => s >= lo && s <= target && !pageSet.has(s));
    assert.deepEqual(missing, [], 'log entries the page missed across the reconnect');
    const clientSet = new Set(w.logSeqs());
    const clientHi = Math.max(...clientSet);
    assert.deepEqual(pageSeqs.filter((s) => s <= clientHi && !clientSet.has(s)), [], 'log entries the client never got');

    // Signals: every one the client got since the page went live is on the page, once.
    const wanted = w.signalOrder.slice(sigFrom);
    assert.ok(wanted.length > 0, 'signals were sent');
    await page.waitForFunction((uuids) => uuids.every((u) => document.querySelector(`#signals li[data-uuid="${u}"]`)), wanted, { timeout: T_LONG })
      .catch(async (e) => {
        const shown = await page.$$eval('#signals li[data-uuid]', (lis) => lis.map((li) => li.dataset.uuid));
        e.message += `\nmissing: ${JSON.stringify(wanted.filter((u) => !shown.includes(u)))}`;
        throw e;
      });
    const uuids = await page.$$eval('#signals li[data-uuid]', (lis) => lis.map((li) => li.dataset.uuid));
    assert.equal(new Set(uuids).size, uuids.length, 'a signal shown twice');

    assert.deepEqual(w.errors, []);
    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});

test('margin level: warning colour under 200 %, danger under 100 %', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  // Rewrite the margin level of the account updates on their way to the page.
  let forced = null;
  const rewriteErrors = [];
  await page.routeWebSocket(isWs, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      if (forced !== null) {
        try {
          const f = JSON.parse(String(m));
          if (f.event === 'account_update') {
            f.data.margin_level = forced;
            m = JSON.stringify(f);
          }
        } catch (e) {
          rewriteErrors.push(`${e.message}: ${String(m).slice(0, 200)}`);
        }
      }
      ws.send(m);
    });
  });

  const level = () => page.$eval('#account .margin-level', (dd) => ({
    text: dd.textContent, state: dd.dataset.state, color: getComputedStyle(dd).color,
  }));

  await withDiagnostics('margin-level', page, [gw], async () => {
    await openLive(page, gw);
    // The theme's colours, resolved the way the browser computes them.
    const colors = await page.evaluate(() => {
      const css = getComputedStyle(document.documentElement);
      const probe = document.createElement('span');
      document.body.append(probe);
      const rgb = (v) => { probe.style.color = css.getPropertyValue(v).trim(); return getComputedStyle(probe).color; };
      const out = { up: rgb('--up'), warn: rgb('--warn'), down: rgb('--down') };
      probe.remove();
      return out;
    });
    await page.waitForSelector('#account .margin-level[data-state="ok"]', { timeout: T_LONG });
    assert.equal((await level()).color, colors.up);

    forced = 150;
    await page.waitForSelector('#account .margin-level[data-state="warning"]', { timeout: T_LONG });
    assert.deepEqual(await level(), { text: '150.00 %', state: 'warning', color: colors.warn });

    forced = 80;
    await page.waitForSelector('#account .margin-level[data-state="danger"]', { timeout: T_LONG });
    assert.deepEqual(await level(), { text: '80.00 %', state: 'danger', color: colors.down });

    forced = null;
    await page.waitForSelector('#account .margin-level[data-state="ok"]', { timeout: T_LONG });
    assert.deepEqual(rewriteErrors, []);
    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});

test('a socket that opens but never says `connected` is given up and retried', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  // The first socket is answered by the test itself, which stays silent.
  let sockets = 0;
  let firstClosed = false;
  await page.routeWebSocket(isWs, (ws) => {
    sockets++;
    if (sockets > 1) ws.connectToServer();
    else ws.onClose(() => { firstClosed = true; });
  });

  await withDiagnostics('hello-timeout', page, [gw], async () => {
    await page.clock.install();
    await page.goto(`${gw.url}/#token=${gw.token}`, { waitUntil: 'domcontentloaded' });
    await waitFor(() => sockets === 1, { message: 'the first socket' });
    await page.waitForSelector('#conn-state[data-state="connecting"]', { timeout: T_LONG });
    assert.equal(firstClosed, false);
    // Past the page's patience (15 s): it closes the silent socket and, after
    // the first backoff, opens another, which reaches the gateway.
    await page.clock.fastForward(30_000);
    await waitFor(() => firstClosed, { message: 'the page to close the silent socket' });
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    assert.equal(sockets, 2);
    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
