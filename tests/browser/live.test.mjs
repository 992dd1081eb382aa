// The console page against `gateway --standalone`: it goes live, streams
// quotes, and stays clean (no console errors, no page errors).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { apiStatus, openBrowser, quoteTexts, startGateway, withDiagnostics, T_LONG } from './helpers.mjs';

test('opens with #token=, goes live, quotes tick, token leaves the URL, no console errors', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('live', page, [gw], async () => {
    await page.goto(`${gw.url}/#token=${gw.token}`, { waitUntil: 'domcontentloaded' });

    // Connection strip: live.
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    assert.match(await page.textContent('#conn-state'), /^live/);
    assert.equal(await page.evaluate(() => window.__dashboard.state().connection), 'live');

    // The token is taken out of the address bar (and never kept in the fragment).
    const url = page.url();
    assert.ok(!url.includes(gw.token), `token still in URL: ${url}`);
    assert.ok(!url.includes('token='), `token= still in URL: ${url}`);
    assert.equal(await page.evaluate(() => location.hash), '');

    // Quote rows appear, then at least one bid changes within two seconds.
    await page.waitForSelector('#quotes tbody tr[data-symbol]', { timeout: T_LONG });
    const rows = await page.$$eval('#quotes tbody tr[data-symbol]', (trs) => trs.map((r) => ({
      symbol: r.dataset.symbol,
      bid: r.querySelector('.bid').textContent,
      ask: r.querySelector('.ask').textContent,
      spread: r.querySelector('.spread').textContent,
      time: r.querySelector('.time').textContent,
    })));
    assert.ok(rows.length >= 1);
    for (const r of rows) {
      assert.match(r.symbol, /^[A-Z0-9.]+$/);
      assert.match(r.bid, /^\d+(\.\d+)?$/, `bid of ${r.symbol}: ${r.bid}`);
      assert.match(r.ask, /^\d+(\.\d+)?$/, `ask of ${r.symbol}: ${r.ask}`);
      assert.ok(Number(r.ask) >= Number(r.bid), `ask < bid for ${r.symbol}`);
      assert.match(r.time, /^\d\d:\d\d:\d\d\.\d\d\d$/, `time of ${r.symbol}: ${r.time}`);
    }
    const bids = Object.fromEntries(rows.map((r) => [r.symbol, r.bid]));
    await page.waitForFunction((before) => {
      for (const tr of document.querySelectorAll('#quotes tbody tr[data-symbol]')) {
        const was = before[tr.dataset.symbol];
        if (was !== undefined && tr.querySelector('.bid').textContent !== was) return true;
      }
      return false;
    }, bids, { timeout: 2000, polling: 50 });

    // A changed price flashes its cells (green up, red down), briefly.
    const flash = await page.waitForFunction(() => {
      for (const a of document.getAnimations()) {
        if (!/^flash-[ab]$/.test(a.animationName) || !a.effect || a.effect.pseudoElement !== '::before') continue;
        const tr = a.effect.target.closest('tr');
        const dir = [...tr.classList].find((c) => /^(up|down)-[ab]$/.test(c));
        if (dir) return { dir: dir.slice(0, -2), ms: a.effect.getTiming().duration };
      }
      return null;
    }, null, { timeout: T_LONG, polling: 20 }).then((h) => h.jsonValue());
    assert.ok(flash.ms > 0 && flash.ms <= 1000, `flash lasts ${flash.ms} ms`);
    const tints = await page.evaluate(() => {
      const probe = (cls) => {
        const tr = document.createElement('tr');
        tr.className = cls;
        const td = document.createElement('td');
        td.className = 'num bid';
        tr.append(td);
        document.querySelector('#quotes tbody').append(tr);
        const bg = getComputedStyle(td, '::before').backgroundColor;
        tr.remove();
        return bg;
      };
      return { up: probe('up-a'), down: probe('down-b') };
    });
    assert.match(tints.up, /^rgba\(47, 191, 113, /, 'up flash is green');
    assert.match(tints.down, /^rgba\(240, 82, 90, /, 'down flash is red');

    // Rows are sorted by symbol and the test hook agrees with the table.
    const symbols = Object.keys(await quoteTexts(page));
    assert.deepEqual(symbols, [...symbols].sort());
    const hookSymbols = await page.evaluate(() => Object.keys(window.__dashboard.state().quotes));
    for (const s of symbols) assert.ok(hookSymbols.includes(s), `${s} missing from __dashboard.state().quotes`);

    // Heartbeat round trip and the status strip (GET /api/status with the token).
    await page.waitForFunction(() => /^RTT \d+ ms$/.test(document.querySelector('#rtt').textContent), null, { timeout: T_LONG });
    await page.waitForSelector('#status-strip[data-available="true"] li.chip[data-key]', { timeout: T_LONG });
    const status = await apiStatus(gw);
    const chips = await page.$$eval('#status-strip li[data-key]', (lis) => Object.fromEntries(lis.map((li) => [li.dataset.key, li.querySelector('.chip-val').textContent])));
    assert.equal(chips.replica, status.replica);
    assert.ok(Number(chips.clients) >= 1, `clients: ${chips.clients}`);
    assert.equal(chips.nats, 'disabled');      // standalone: in-memory bus
    assert.equal(chips.redis, status.redis);
    assert.equal(chips.mode, 'standalone');

    // Let it stream a little longer: errors during rendering show up here.
    await page.waitForFunction(() => window.__dashboard.state().logsCount > 0 && document.querySelector('#positions tbody tr[data-ticket]'), null, { timeout: T_LONG });
    assert.equal(await page.evaluate(() => window.__dashboard.state().connection), 'live');
    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
