// Laptop and phone widths with live data: no horizontal overflow, every panel
// reachable, the quotes table readable without sideways scrolling on a
// phone. Saves screenshots to tests/browser/artifacts/ (laptop.png,
// laptop-full.png, phone.png, phone-top.png).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, openLive, screenshot, startGateway, withDiagnostics, T_LONG } from './helpers.mjs';

const PANELS = ['quotes', 'account', 'positions', 'orders', 'signals', 'logs'];

/** Everything the page shows, loaded: rows in every panel, status strip, RTT. */
async function waitFull(page) {
  await page.waitForFunction(() => {
    const n = (sel) => document.querySelectorAll(sel).length;
    return n('#quotes tbody tr') >= 10 && n('#positions tbody tr') > 0 && n('#orders tbody tr') > 0 &&
      n('#signals li.signal') >= 3 && n('#logs li') >= 12 &&
      document.querySelector('#account .equity').textContent !== '—' &&
      document.querySelector('#status-strip[data-available="true"]') &&
      /^RTT \d+ ms$/.test(document.querySelector('#rtt').textContent);
  }, null, { timeout: T_LONG, polling: 200 });
}

/** Elements sticking out of the viewport sideways, outside the scrollable tables. */
function overflowing(page) {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const out = [];
    for (const el of document.body.querySelectorAll('*')) {
      if (el.closest('.table-wrap') || el.closest('.sr-only') || el.classList.contains('skip-link')) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.left < -0.5 || r.right > vw + 0.5) {
        out.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}.${el.className} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
      }
    }
    return { vw, scrollWidth: document.documentElement.scrollWidth, out: out.slice(0, 10) };
  });
}

test('laptop and phone widths: no horizontal overflow, every panel reachable; screenshots', async (t) => {
  const gw = await startGateway({ env: { SIM_SIGNALS_PER_SEC: '4' } });
  t.after(() => gw.stop());
  const b = await openBrowser({ viewport: { width: 1366, height: 800 } });
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('layout', page, [gw], async () => {
    // Laptop.
    await openLive(page, gw);
    await waitFull(page);
    let o = await overflowing(page);
    assert.ok(o.scrollWidth <= o.vw, `laptop: page wider than the window: ${JSON.stringify(o)}`);
    assert.deepEqual(o.out, []);
    await screenshot(page, 'laptop');
    await screenshot(page, 'laptop-full', { fullPage: true });

    // Phone (390 x 844), loaded afresh at that size.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    await waitFull(page);
    o = await overflowing(page);
    assert.ok(o.scrollWidth <= o.vw, `phone: page wider than the screen: ${JSON.stringify(o)}`);
    assert.deepEqual(o.out, [], 'phone: elements outside the screen');

    // The quotes fit without sideways scrolling; the wide tables scroll inside their panel.
    const fit = await page.$eval('.panel-quotes .table-wrap', (w) => ({ sw: w.scrollWidth, cw: w.clientWidth }));
    assert.ok(fit.sw <= fit.cw + 1, `quotes table wider than its panel on a phone: ${JSON.stringify(fit)}`);
    // The P/L sum is in the positions header, on screen.
    const pl = await page.$eval('#positions-pl', (n) => n.getBoundingClientRect().right);
    assert.ok(pl <= 390, `P/L sum off screen: ${pl}`);

    // Every panel can be scrolled to and its heading is visible, not covered.
    for (const name of PANELS) {
      const head = `#h-${name}`;
      await page.locator(head).scrollIntoViewIfNeeded();
      const hit = await page.$eval(head, (h) => {
        const r = h.getBoundingClientRect();
        const at = document.elementFromPoint(r.left + Math.min(20, r.width / 2), r.top + r.height / 2);
        return { top: r.top, bottom: r.bottom, left: r.left, right: r.right, ok: !!at && (at === h || h.contains(at)) };
      });
      assert.ok(hit.ok && hit.top >= 0 && hit.bottom <= 844 && hit.left >= 0 && hit.right <= 390,
        `${name} panel heading not reachable: ${JSON.stringify(hit)}`);
    }
    await page.evaluate(() => window.scrollTo(0, 0));
    await screenshot(page, 'phone-top');
    await screenshot(page, 'phone', { fullPage: true });

    // A narrower phone (360): still no sideways scrolling of the page.
    await page.setViewportSize({ width: 360, height: 740 });
    await page.waitForFunction(() => document.documentElement.clientWidth === 360);
    o = await overflowing(page);
    assert.ok(o.scrollWidth <= o.vw, `360 px: page wider than the screen: ${JSON.stringify(o)}`);
    assert.deepEqual(o.out, [], '360 px: elements outside the screen');

    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
