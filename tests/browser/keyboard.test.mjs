// Keyboard only: the token form, the skip link, every panel and control
// reached with Tab in reading order, and the controls work from the keyboard.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openBrowser, startGateway, withDiagnostics, T_LONG } from './helpers.mjs';

/** A short name for the focused element. */
const focused = (page) => page.evaluate(() => {
  const a = document.activeElement;
  if (!a || a === document.body) return 'body';
  if (a.id) return `#${a.id}`;
  const label = a.getAttribute('aria-labelledby');
  if (label) return `region:${label}`;
  return a.tagName.toLowerCase();
});

/** Press Tab until `want` has focus (at most `max` presses); returns the names seen on the way. */
async function tabTo(page, want, max = 30) {
  const seen = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    seen.push(f);
    if (f === want) return seen;
  }
  throw new Error(`${want} not reached with Tab; focus went: ${seen.join(' → ')}`);
}

test('keyboard: token form, skip link, panels and log controls', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('keyboard', page, [gw], async () => {
    // No token: the field has focus; type, Tab to Connect, Enter.
    await page.goto(`${gw.url}/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'token-input', null, { timeout: T_LONG });
    await page.keyboard.insertText(gw.token);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.matches('#auth-form button[type="submit"]')), true);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    await page.waitForSelector('#auth', { state: 'hidden', timeout: T_LONG });
    // Focus is not left on the hidden form: it moves to the dashboard.
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'main', null, { timeout: T_LONG });
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'region:h-quotes');

    // Loaded afresh (the token is kept for the tab): the skip link comes
    // first, and it lands on the dashboard.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
    await page.waitForFunction(() => document.querySelectorAll('#logs li').length >= 5, null, { timeout: T_LONG });
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.className), 'skip-link');
    assert.equal(await page.$eval('.skip-link', (a) => a.getBoundingClientRect().top >= 0), true, 'the focused skip link is on screen');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'main');

    // Every panel's scroll area and every control, in reading order.
    const order = ['region:h-quotes', 'region:h-positions', 'region:h-orders', 'region:h-signals', '#log-level', '#logs-pause', 'region:h-logs'];
    const seen = await tabTo(page, order[order.length - 1]);
    const idx = order.map((name) => seen.indexOf(name));
    assert.ok(idx.every((i) => i >= 0), `not all reached: ${seen.join(' → ')}`);
    assert.deepEqual(idx, [...idx].sort((a, b) => a - b), `out of order: ${seen.join(' → ')}`);

    // The focused control is visibly marked.
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), '#logs-pause');
    const outline = await page.$eval('#logs-pause', (n) => getComputedStyle(n).outlineStyle);
    assert.notEqual(outline, 'none', 'no focus ring on the Pause button');

    // Pause with Space, resume with Enter.
    await page.keyboard.press('Space');
    await page.waitForSelector('#logs-pause[aria-pressed="true"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#logs-pause[aria-pressed="false"]');

    // The level select: type-ahead picks ERROR, and the list follows.
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), '#log-level');
    await page.keyboard.type('E');
    assert.equal(await page.inputValue('#log-level'), 'ERROR');
    await page.waitForFunction(() => [...document.querySelectorAll('#logs li')].every((li) => li.dataset.level === 'ERROR' || li.dataset.level === 'CRITICAL'), null, { timeout: T_LONG });
    await page.keyboard.press('Home');
    assert.equal(await page.inputValue('#log-level'), 'all');
    await page.waitForSelector('#logs li[data-level="INFO"]', { state: 'attached', timeout: T_LONG });

    // A focused scroll area scrolls with the keyboard.
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'region:h-logs');
    await page.waitForFunction(() => { const s = document.querySelector('#logs').parentElement; return s.scrollHeight > s.clientHeight + 50; }, null, { timeout: T_LONG });
    await page.keyboard.press('PageDown');
    await page.waitForFunction(() => document.querySelector('#logs').parentElement.scrollTop > 0, null, { timeout: T_LONG });

    // "Change token" from the keyboard: back to the form, focus in the field.
    await page.focus('#logout-btn');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#auth-form', { state: 'visible', timeout: T_LONG });
    await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'token-input', null, { timeout: T_LONG });

    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
