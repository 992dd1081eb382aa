// The logs panel: the level filter shows only entries at or above the chosen
// level; Pause freezes the list and counts what arrives, Resume shows it all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  openBrowser, openLive, pageLogSeqs, startGateway, waitFor, watcher, withDiagnostics, T_LONG,
} from './helpers.mjs';

const RANK = { DEBUG: 0, INFO: 1, WARNING: 2, ERROR: 3, CRITICAL: 4 };

const shownLevels = (page) => page.$$eval('#logs li[data-seq]', (lis) => lis.map((li) => li.dataset.level));

test('logs: level filter and pause', async (t) => {
  const gw = await startGateway({ env: { SIM_LOGS_PER_SEC: '25' } });
  t.after(() => gw.stop());
  const w = watcher(gw.url, gw.token);
  t.after(() => w.close());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('logs', page, [gw], async () => {
    await openLive(page, gw);
    // Enough of every level to filter.
    await page.waitForFunction(() => {
      const lv = new Set([...document.querySelectorAll('#logs li[data-seq]')].map((li) => li.dataset.level));
      return ['DEBUG', 'INFO', 'WARNING', 'ERROR'].every((l) => lv.has(l));
    }, null, { timeout: T_LONG });

    // Filter: WARNING and above, including entries arriving after the change.
    for (const level of ['WARNING', 'ERROR']) {
      await page.selectOption('#log-level', level);
      const n = w.logs.length;
      await waitFor(() => w.logs.length >= n + 10, { message: '10 more log entries' });
      await page.waitForFunction((min) => {
        const rank = { DEBUG: 0, INFO: 1, WARNING: 2, ERROR: 3, CRITICAL: 4 };
        const lis = [...document.querySelectorAll('#logs li[data-seq]')];
        return lis.length > 0 && lis.every((li) => rank[li.dataset.level] >= min);
      }, RANK[level], { timeout: T_LONG });
      const levels = await shownLevels(page);
      assert.ok(levels.every((l) => RANK[l] >= RANK[level]), `${level}: ${levels.join(',')}`);
      // The filter hides; the page still has the rest.
      assert.ok((await page.evaluate(() => window.__dashboard.state().logsCount)) > levels.length);
    }
    // Back to all: every level again.
    await page.selectOption('#log-level', 'all');
    await page.waitForFunction(() => ['DEBUG', 'INFO'].every((l) => document.querySelector(`#logs li[data-level="${l}"]`)), null, { timeout: T_LONG });

    // Pause: the list stops moving, the badge counts what arrives.
    await page.click('#logs-pause');
    assert.equal(await page.getAttribute('#logs-pause', 'aria-pressed'), 'true');
    assert.equal((await page.textContent('#logs-pause')).trim(), 'Resume');
    await page.waitForFunction(() => document.querySelector('#logs-pause').closest('.panel').classList.contains('paused'));
    const frozen = await pageLogSeqs(page);
    const clientAtPause = w.logs.length;
    await page.waitForFunction(() => {
      const m = /^(\d+) new$/.exec(document.querySelector('#logs-new').textContent);
      return m && Number(m[1]) >= 10 && !document.querySelector('#logs-new').hidden;
    }, null, { timeout: T_LONG });
    assert.ok(w.logs.length > clientAtPause, 'entries kept coming while paused');
    assert.deepEqual(await pageLogSeqs(page), frozen, 'the list changed while paused');
    const held = await page.evaluate(() => window.__dashboard.state().logsPending);
    assert.ok(held >= 10, `entries held while paused: ${held}`);

    // Resume: everything that arrived meanwhile is shown, in order, once.
    await page.click('#logs-pause');
    assert.equal(await page.getAttribute('#logs-pause', 'aria-pressed'), 'false');
    assert.equal((await page.textContent('#logs-pause')).trim(), 'Pause');
    await page.waitForSelector('#logs-new', { state: 'hidden', timeout: T_LONG });
    const target = w.logs[w.logs.length - 1].seq;
    await page.waitForFunction((s) => Number(document.querySelector('#logs li[data-seq]').dataset.seq) >= s, target, { timeout: T_LONG });
    const seqs = await pageLogSeqs(page);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a), 'newest first');
    assert.equal(new Set(seqs).size, seqs.length, 'an entry shown twice');
    const set = new Set(seqs);
    const missing = w.logSeqs().filter((s) => s > frozen[0] && s <= target && !set.has(s));
    assert.deepEqual(missing, [], 'entries that arrived during the pause and are not shown');

    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
