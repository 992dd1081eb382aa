// Quotes, positions, orders, account, logs and signals as the page shows them
// equal what a socket.io-client (Node, same token, all channels) receives at
// the same time from the same gateway.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fmtMoney, fmtSigned, openBrowser, openLive, pageLogSeqs, startGateway, waitFor, watcher, withDiagnostics, T_LONG,
} from './helpers.mjs';

const pageRows = (page, table, cellClass) => page.$$eval(`#${table} tbody tr[data-ticket]`, (trs, cls) => trs.map((tr) => ({
  ticket: tr.dataset.ticket,
  text: cls ? tr.querySelector(`.${cls}`).textContent : null,
})), cellClass);

/**
 * Retry until `read()` (the page) equals `expect(v)` for one of the last
 * values received by the socket.io client (the two are independent
 * connections: one may be an update ahead of the other).
 */
async function converge(label, read, values, expect) {
  let last = null;
  await waitFor(async () => {
    const shown = await read();
    const candidates = values().slice().reverse().map(expect);
    last = { shown, candidates };
    return candidates.some((c) => JSON.stringify(c) === JSON.stringify(shown));
  }, { timeout: T_LONG, interval: 150, message: `${label} on the page to match the socket.io client` })
    .catch((e) => { e.message += `\nlast: ${JSON.stringify(last, null, 1)}`; throw e; });
  return last;
}

const pct = (c) => `${Math.round(c * 1000) / 10}%`;

/** Retry `check` (which throws while it does not hold) until it passes. */
async function eventually(label, check) {
  let last = null;
  await waitFor(async () => {
    try { await check(); return true; } catch (e) { last = e; return false; }
  }, { timeout: T_LONG, interval: 150, message: label }).catch((e) => { if (last) e.message += `\n${last.message}`; throw e; });
}

test('quotes, positions, orders, account, logs and signals match a socket.io client', async (t) => {
  const gw = await startGateway({ env: { SIM_SIGNALS_PER_SEC: '4' } });
  t.after(() => gw.stop());
  const w = watcher(gw.url, gw.token, { keep: 6 });
  t.after(() => w.close());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page, problems } = b;

  await withDiagnostics('data', page, [gw], async () => {
    await waitFor(() => w.connected && w.positions.length && w.orders.length && w.account.length,
      { message: 'the socket.io client to receive positions, orders and account' });
    await openLive(page, gw);
    assert.deepEqual(w.errors, []);

    // Quotes: every row's bid, ask and spread are one of the last values the
    // client got for that symbol (prices compared as numbers; the page pads
    // to the symbol's digits).
    await waitFor(async () => {
      const rows = await page.$$eval('#quotes tbody tr[data-symbol]', (trs) => trs.map((tr) => ({
        symbol: tr.dataset.symbol,
        bid: Number(tr.querySelector('.bid').textContent),
        ask: Number(tr.querySelector('.ask').textContent),
        spread: tr.querySelector('.spread').textContent,
      })));
      const symbols = Object.keys(w.quotes);
      if (rows.length !== symbols.length || rows.length < 2) return false;
      return rows.every((r) => (w.quotes[r.symbol] || []).some((q) => q.bid === r.bid && q.ask === r.ask && String(q.spread) === r.spread));
    }, { timeout: T_LONG, message: 'every quote row to show a price the socket.io client received' });

    // Positions: tickets in order and the displayed profit of each.
    const pos = await converge('positions', () => pageRows(page, 'positions', 'profit'), () => w.positions,
      (list) => list.map((p) => ({ ticket: String(p.ticket), text: fmtSigned(p.profit) })));
    assert.ok(pos.shown.length > 0, 'the simulator has open positions');
    for (const r of pos.shown) assert.match(r.text, /^[+-]?\d{1,3}(,\d{3})*\.\d\d$/);

    // The total row and the header are the sum of the profits shown.
    await converge('positions total', async () => {
      const [rows, total, header] = await Promise.all([
        pageRows(page, 'positions', 'profit'),
        page.textContent('#positions-total'),
        page.textContent('#positions-pl'),
      ]);
      return { rows, total, header };
    }, () => w.positions, (list) => {
      const sum = list.reduce((s, p) => s + p.profit, 0);
      return {
        rows: list.map((p) => ({ ticket: String(p.ticket), text: fmtSigned(p.profit) })),
        total: fmtSigned(sum),
        header: `P/L ${fmtSigned(sum)}`,
      };
    });

    // Every column of the positions, as displayed.
    const detail = await converge('position rows', () => page.$$eval('#positions tbody tr[data-ticket]', (trs) => trs.map((tr) => {
      const c = (cls) => tr.querySelector(`.${cls}`).textContent;
      const n = (cls) => (c(cls) === '—' ? 0 : Number(c(cls)));   // no S/L or T/P: a dash
      return {
        ticket: tr.dataset.ticket, symbol: c('symbol'), type: c('type'), volume: n('volume'),
        open: n('price-open'), current: n('price-current'), sl: n('sl'), tp: n('tp'),
        swap: c('swap'), commission: c('commission'), comment: c('comment'),
      };
    })), () => w.positions, (list) => list.map((p) => ({
      ticket: String(p.ticket), symbol: p.symbol, type: p.type, volume: p.volume,
      open: p.price_open, current: p.price_current, sl: p.sl, tp: p.tp,
      swap: fmtMoney(p.swap), commission: fmtMoney(p.commission), comment: p.comment,
    })));
    assert.ok(detail.shown.length > 0);

    // Orders: every column.
    await converge('orders', () => page.$$eval('#orders tbody tr[data-ticket]', (trs) => trs.map((tr) => {
      const c = (cls) => tr.querySelector(`.${cls}`).textContent;
      const n = (cls) => (c(cls) === '—' ? 0 : Number(c(cls)));
      return {
        ticket: tr.dataset.ticket, symbol: c('symbol'), type: c('type'), volume: n('volume'),
        price: n('price-open'), sl: n('sl'), tp: n('tp'), state: c('state'), comment: c('comment'),
      };
    })), () => w.orders, (list) => list.map((o) => ({
      ticket: String(o.ticket), symbol: o.symbol, type: o.type, volume: o.volume,
      price: o.price_open, sl: o.sl, tp: o.tp, state: o.state, comment: o.comment,
    })));

    // Account: every figure as displayed, margin level included.
    const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    await converge('account', () => page.$eval('#account', (dl) => ({
      balance: dl.querySelector('.balance').textContent,
      equity: dl.querySelector('.equity').textContent,
      margin: dl.querySelector('.margin').textContent,
      free_margin: dl.querySelector('.free-margin').textContent,
      margin_level: dl.querySelector('.margin-level').textContent,
      profit: dl.querySelector('.profit').textContent,
      currency: document.querySelector('#account-currency').textContent,
    })), () => w.account, (a) => ({
      balance: fmtMoney(a.balance),
      equity: fmtMoney(a.equity),
      margin: fmtMoney(a.margin),
      free_margin: fmtMoney(a.free_margin),
      margin_level: a.margin > 0 && a.margin_level > 0 ? `${money.format(a.margin_level)} %` : '—',
      profit: fmtSigned(a.profit),
      currency: a.currency,
    }));

    // Logs: an entry the socket.io client received after the page went live
    // is on the page, with the same level, module and message.
    const from = w.logs.length;
    const entry = await waitFor(() => w.logs.length > from && w.logs[w.logs.length - 1],
      { message: 'a log entry on the socket.io client' });
    const li = `#logs li[data-seq="${entry.seq}"]`;
    await page.waitForSelector(li, { state: 'attached', timeout: T_LONG });
    assert.deepEqual(await page.$eval(li, (n) => ({
      level: n.querySelector('.level').textContent,
      module: n.querySelector('.module').textContent,
      message: n.querySelector('.message').textContent,
    })), { level: entry.level, module: entry.module, message: entry.message });

    // Signals: same, by uuid, with the validators' verdicts and confidences.
    const sigFrom = w.signalOrder.length;
    const uuid = await waitFor(() => w.signalOrder.length > sigFrom && w.signalOrder[w.signalOrder.length - 1],
      { message: 'a signal on the socket.io client' });
    const sli = `#signals li[data-uuid="${uuid}"]`;
    await page.waitForSelector(sli, { state: 'attached', timeout: T_LONG });
    await eventually('the signal on the page', async () => {
      const sig = w.signals.get(uuid);
      const shown = await page.$eval(sli, (n) => ({
        symbol: n.querySelector('.sig-symbol').textContent,
        side: n.querySelector('.sig-side').textContent,
        status: n.querySelector('.status').textContent,
        source: n.querySelector('.sig-source').textContent,
        confidence: n.querySelector('.sig-confidence').textContent,
        validators: [...n.querySelectorAll('.validator')].map((v) => ({
          name: v.querySelector('.v-name').textContent,
          type: v.querySelector('.v-type').textContent,
          approved: v.dataset.approved === 'true',
          verdict: v.querySelector('.verdict').textContent,
          confidence: v.querySelector('.v-confidence').textContent,
          reason: v.querySelector('.v-reason').textContent,
        })),
      }));
      assert.deepEqual(shown, {
        symbol: sig.symbol,
        side: sig.side.toUpperCase(),
        status: sig.status,
        source: sig.source,
        confidence: pct(sig.confidence),
        validators: sig.validators.map((v) => ({
          name: v.name, type: v.type, approved: v.approved, verdict: v.approved ? '✓' : '✗',
          confidence: pct(v.confidence), reason: v.reason,
        })),
      });
      assert.ok(sig.validators.length > 0, 'the simulator sends validators');
    });

    // Every log seq the page shows is one the socket.io client also saw (no
    // invented entries) for the range both were connected, and none twice.
    const pageSeqs = await pageLogSeqs(page);
    const clientSeqs = w.logSeqs();
    const seen = new Set(clientSeqs);
    const lo = Math.min(...clientSeqs);
    const hi = Math.max(...clientSeqs);
    assert.deepEqual(pageSeqs.filter((s) => s >= lo && s <= hi && !seen.has(s)), [],
      'log seqs on the page that the socket.io client never received');
    assert.equal(new Set(pageSeqs).size, pageSeqs.length, 'a log entry shown twice');
    // ... and the page has every entry the client got since the page's oldest.
    const pageSet = new Set(pageSeqs);
    const newest = Math.max(...pageSeqs);
    const missing = clientSeqs.filter((s) => s >= Math.min(...pageSeqs) && s <= newest && !pageSet.has(s));
    assert.deepEqual(missing, [], 'log entries the page missed');

    assert.deepEqual(w.errors, []);
    assert.deepEqual(problems, [], `console errors/warnings or page errors:\n${problems.join('\n')}`);
  });
});
