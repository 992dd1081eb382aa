// Positions, orders, account, logs and signals as the page shows them equal
// what a socket.io-client (Node, same token, all channels) receives at the
// same time from the same gateway.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import {
  CHANNELS, fmtMoney, fmtSigned, openBrowser, openLive, startGateway, waitFor, withDiagnostics, T_LONG,
} from './helpers.mjs';

/** A socket.io client that keeps the latest (and the previous) value of each state channel. */
function watcher(url, token) {
  const w = {
    positions: [], orders: [], account: [],   // newest last; at most 2 kept
    logSeqs: [], signalUuids: [],
    errors: [],
    connected: null,
  };
  const push = (arr, v) => { arr.push(v); if (arr.length > 2) arr.shift(); };
  const sock = io(url, { auth: { token }, transports: ['websocket'], reconnection: false, timeout: T_LONG });
  sock.on('connected', (d) => { w.connected = d; sock.emit('subscribe', { channels: CHANNELS }); });
  sock.on('positions_update', (d) => push(w.positions, d));
  sock.on('orders_update', (d) => push(w.orders, d));
  sock.on('account_update', (d) => push(w.account, d));
  sock.on('logs_update', (d) => { if (typeof d.seq === 'number') w.logSeqs.push(d.seq); });
  sock.on('signals_update', (d) => { if (d.uuid) w.signalUuids.push(d.uuid); });
  sock.on('error', (d) => w.errors.push(d));
  sock.on('connect_error', (e) => w.errors.push({ connect_error: e.message }));
  w.close = () => sock.close();
  return w;
}

const pageRows = (page, table, cellClass) => page.$$eval(`#${table} tbody tr[data-ticket]`, (trs, cls) => trs.map((tr) => ({
  ticket: tr.dataset.ticket,
  text: cls ? tr.querySelector(`.${cls}`).textContent : null,
})), cellClass);

/**
 * Retry until `read()` (the page) equals `expect(v)` for the latest value
 * received by the socket.io client, or the one before it (one update of
 * difference between two independent connections is allowed).
 */
async function converge(label, read, values, expect) {
  let last = null;
  await waitFor(async () => {
    const shown = await read();
    const candidates = values().slice().reverse().map(expect);
    last = { shown, candidates };
    return candidates.some((c) => JSON.stringify(c) === JSON.stringify(shown));
  }, { timeout: T_LONG, interval: 150, message: `${label} on the page to match the socket.io client: ${JSON.stringify(last)}` })
    .catch((e) => { e.message += `\nlast: ${JSON.stringify(last, null, 1)}`; throw e; });
  return last;
}

test('positions, orders, account, logs and signals match a socket.io client', async (t) => {
  const gw = await startGateway();
  t.after(() => gw.stop());
  const b = await openBrowser();
  t.after(() => b.close());
  const { page } = b;
  const w = watcher(gw.url, gw.token);
  t.after(() => w.close());

  await withDiagnostics('data', page, [gw], async () => {
    await openLive(page, gw);
    await waitFor(() => w.connected && w.positions.length && w.orders.length && w.account.length,
      { message: 'the socket.io client to receive positions, orders and account' });
    assert.deepEqual(w.errors, []);

    // Positions: tickets in order and the displayed profit of each.
    const pos = await converge('positions', () => pageRows(page, 'positions', 'profit'), () => w.positions,
      (list) => list.map((p) => ({ ticket: String(p.ticket), text: fmtSigned(p.profit) })));
    assert.ok(pos.shown.length > 0, 'the simulator has open positions');
    for (const r of pos.shown) assert.match(r.text, /^[+-]?\d{1,3}(,\d{3})*\.\d\d$/);

    // The total row is the sum of the profits shown.
    await converge('positions total', async () => {
      const [rows, total] = await Promise.all([
        pageRows(page, 'positions', 'profit'),
        page.textContent('#positions-total'),
      ]);
      return { rows, total };
    }, () => w.positions, (list) => ({
      rows: list.map((p) => ({ ticket: String(p.ticket), text: fmtSigned(p.profit) })),
      total: fmtSigned(list.reduce((s, p) => s + p.profit, 0)),
    }));

    // The other columns of one position, as displayed.
    const detail = await converge('a position row', () => page.$$eval('#positions tbody tr[data-ticket]', (trs) => trs.map((tr) => ({
      ticket: tr.dataset.ticket,
      symbol: tr.querySelector('.symbol').textContent,
      type: tr.querySelector('.type').textContent,
      volume: Number(tr.querySelector('.volume').textContent),
      open: Number(tr.querySelector('.price-open').textContent),
    }))), () => w.positions, (list) => list.map((p) => ({
      ticket: String(p.ticket), symbol: p.symbol, type: p.type, volume: p.volume, open: p.price_open,
    })));
    assert.ok(detail.shown.length > 0);

    // Orders: tickets in order, symbol and type.
    await converge('orders', () => page.$$eval('#orders tbody tr[data-ticket]', (trs) => trs.map((tr) => ({
      ticket: tr.dataset.ticket,
      symbol: tr.querySelector('.symbol').textContent,
      type: tr.querySelector('.type').textContent,
    }))), () => w.orders, (list) => list.map((o) => ({ ticket: String(o.ticket), symbol: o.symbol, type: o.type })));

    // Account: balance and equity (and the rest) as displayed.
    await converge('account', () => page.$eval('#account', (dl) => ({
      balance: dl.querySelector('.balance').textContent,
      equity: dl.querySelector('.equity').textContent,
      margin: dl.querySelector('.margin').textContent,
      free_margin: dl.querySelector('.free-margin').textContent,
      profit: dl.querySelector('.profit').textContent,
    })), () => w.account, (a) => ({
      balance: fmtMoney(a.balance),
      equity: fmtMoney(a.equity),
      margin: fmtMoney(a.margin),
      free_margin: fmtMoney(a.free_margin),
      profit: fmtSigned(a.profit),
    }));
    const ml = await page.textContent('#account .margin-level');
    assert.match(ml, /^(\d{1,3}(,\d{3})*\.\d\d %|—)$/, `margin level: ${ml}`);

    // Logs: an entry the socket.io client received (after the page went live) is on the page.
    const seqFrom = w.logSeqs.length;
    const [seq] = await waitFor(() => w.logSeqs.length > seqFrom && w.logSeqs.slice(-1),
      { message: 'a log entry on the socket.io client' });
    await page.waitForSelector(`#logs li[data-seq="${seq}"]`, { state: 'attached', timeout: T_LONG });
    const logText = await page.textContent(`#logs li[data-seq="${seq}"]`);
    assert.ok(logText.trim().length > 0);

    // Signals: same, by uuid.
    const uuidFrom = w.signalUuids.length;
    const uuid = await waitFor(() => w.signalUuids.length > uuidFrom && w.signalUuids[w.signalUuids.length - 1],
      { timeout: 60_000, message: 'a signal on the socket.io client' });
    await page.waitForSelector(`#signals li[data-uuid="${uuid}"]`, { state: 'attached', timeout: T_LONG });

    // Every log seq the page shows is one the socket.io client also saw (no invented entries),
    // for the range both were connected.
    const pageSeqs = await page.$$eval('#logs li[data-seq]', (lis) => lis.map((li) => Number(li.dataset.seq)));
    const seen = new Set(w.logSeqs);
    const lo = Math.min(...w.logSeqs);
    const hi = Math.max(...w.logSeqs);
    const stray = pageSeqs.filter((s) => s >= lo && s <= hi && !seen.has(s));
    assert.deepEqual(stray, [], 'log seqs on the page that the socket.io client never received');
    assert.deepEqual(w.errors, []);
  });
});
