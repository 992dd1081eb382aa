// Shared helpers for the console page's browser tests: start the real gateway
// binary, mint tokens with it, launch the system Chromium through playwright-core.
//
// Every process started here is killed by PID on teardown (the tests register
// `t.after`), and once more, synchronously, when the test process exits.

import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '..', '..');
export const ARTIFACTS = join(HERE, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHANNELS = ['quotes', 'positions', 'orders', 'logs', 'signals', 'account'];

// Generous: the CI machine has 2 cores and runs a debug build next to Chromium.
export const T_START = 60_000;   // gateway up, browser up
export const T_LONG = 30_000;    // page state changes that need the network
export const T_SHORT = 10_000;

const live = new Set();          // child processes still running
process.on('exit', () => {
  for (const p of live) {
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

// ------------------------------------------------------------------ gateway

export function gatewayBinary() {
  let target = process.env.CARGO_TARGET_DIR;
  if (target) {
    target = isAbsolute(target) ? target : resolve(process.cwd(), target);
  } else {
    target = join(REPO_ROOT, 'target');
  }
  const bin = process.env.GATEWAY_BIN || join(target, 'debug', 'gateway');
  if (!existsSync(bin)) {
    throw new Error(
      `gateway binary not found at ${bin}: build it first with \`cargo build -p gateway\` ` +
      '(honours CARGO_TARGET_DIR; or point GATEWAY_BIN at a binary)');
  }
  return bin;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

// Variables that would turn the standalone gateway into something else.
const SCRUB = ['NATS_URL', 'REDIS_URL', 'JWT_SECRET', 'JWT_PUBLIC_KEY_FILE', 'JWT_PRIVATE_KEY_FILE',
  'JWT_ISSUER', 'JWT_AUDIENCE', 'CORS_ORIGINS', 'TLS_CERT_FILE', 'TLS_KEY_FILE',
  'OTEL_EXPORTER_OTLP_ENDPOINT', 'GATEWAY_ADDR', 'DEFAULT_ACCOUNT', 'SUBJECT_PREFIX'];

function gatewayEnv(extra) {
  const env = { ...process.env };
  for (const k of SCRUB) delete env[k];
  env.NO_COLOR = '1';
  return { ...env, ...extra };
}

// A cwd of its own so that no `.env` of the repo or the developer is read.
let gwCwd = null;
function gatewayCwd() {
  if (!gwCwd) {
    gwCwd = mkdtempSync(join(tmpdir(), 'gw-browser-'));
    process.on('exit', () => { try { rmSync(gwCwd, { recursive: true, force: true }); } catch { /* ignore */ } });
  }
  return gwCwd;
}

/**
 * Start `gateway --standalone`.
 * opts.port: fixed port (default: any free one); opts.secret: JWT_SECRET;
 * opts.env: more environment.
 * Resolves to { url, port, token, pid, proc, stop(), output() }.
 */
export async function startGateway(opts = {}) {
  const bin = gatewayBinary();
  const addr = `127.0.0.1:${opts.port ?? 0}`;
  const env = gatewayEnv({ GATEWAY_ADDR: addr, ...(opts.secret ? { JWT_SECRET: opts.secret } : {}), ...(opts.env || {}) });
  const proc = spawn(bin, ['--standalone'], { cwd: gatewayCwd(), env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);

  const tail = [];               // last lines of stdout+stderr, for failure messages
  const keep = (line) => { tail.push(line); if (tail.length > 80) tail.shift(); };
  let exited = null;
  const exitP = new Promise((res) => {
    proc.on('exit', (code, signal) => { exited = { code, signal }; live.delete(proc); res(exited); });
  });
  proc.on('error', (e) => keep(`spawn error: ${e.message}`));

  let errBuf = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {      // always drained: a full pipe would block the gateway
    errBuf += d;
    let i;
    while ((i = errBuf.indexOf('\n')) >= 0) { keep(errBuf.slice(0, i)); errBuf = errBuf.slice(i + 1); }
  });

  let outBuf = '';
  const info = {};
  const ready = new Promise((res, rej) => {
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      outBuf += d;
      let i;
      while ((i = outBuf.indexOf('\n')) >= 0) {
        const line = outBuf.slice(0, i).trim();
        outBuf = outBuf.slice(i + 1);
        keep(line);
        let m;
        if ((m = line.match(/listening on (https?:\/\/[^\s]+)/))) info.url = m[1].replace(/\/$/, '');
        else if ((m = line.match(/^token: (\S+)/))) info.token = m[1];
        // With JWT_SECRET set the gateway prints no token: mint one below.
        if (info.url && (info.token || opts.secret)) res();
      }
    });
    exitP.then((e) => rej(new Error(`gateway exited before it was ready (${JSON.stringify(e)}):\n${tail.join('\n')}`)));
  });
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`gateway did not print its address within ${T_START} ms:\n${tail.join('\n')}`)), T_START);
  });
  try {
    await Promise.race([ready, timeout]);
  } catch (e) {
    await killProc(proc, exitP, 'SIGKILL', 5000);
    throw e;
  } finally {
    clearTimeout(timer);
  }

  if (!info.token) {
    try {
      info.token = mintToken({ secret: opts.secret, sub: 'browser-test' });
    } catch (e) {
      await killProc(proc, exitP, 'SIGKILL', 5000);
      throw e;
    }
  }
  const port = Number(new URL(info.url).port);
  let stopping = null;
  return {
    url: info.url,
    port,
    token: info.token,
    pid: proc.pid,
    proc,
    exited: () => exited,
    output: () => tail.join('\n'),
    /** SIGKILL (a crash): no drain, no goodbye. Resolves when the process is gone. */
    kill() {
      if (!stopping) stopping = killProc(proc, exitP, 'SIGKILL', 5000);
      return stopping;
    },
    /** SIGTERM (drain), wait for exit; SIGKILL after `graceMs`. Idempotent. */
    stop(graceMs = 15_000) {
      if (!stopping) stopping = killProc(proc, exitP, 'SIGTERM', graceMs);
      return stopping;
    },
  };
}

async function killProc(proc, exitP, signal, graceMs) {
  if (proc.exitCode !== null || proc.signalCode !== null) return exitP;
  try { process.kill(proc.pid, signal); } catch { /* already gone */ }
  let timer;
  const res = await Promise.race([exitP, new Promise((r) => { timer = setTimeout(() => r(null), graceMs); })]);
  clearTimeout(timer);
  if (res) return res;
  try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
  return exitP;
}

/** Mint an HS256 token with `gateway token`. ttl in seconds (negative: already expired). */
export function mintToken({ secret, sub = 'browser-test', ttl = 3600, account, channels } = {}) {
  const args = ['token', '--sub', sub, `--ttl=${ttl}`];
  if (account) args.push('--account', account);
  if (channels) args.push('--channels', channels.join(','));
  const out = execFileSync(gatewayBinary(), args, {
    cwd: gatewayCwd(),
    env: gatewayEnv({ JWT_SECRET: secret }),
    encoding: 'utf8',
    timeout: 30_000,
  });
  const tok = out.trim().split(/\s+/).pop();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(tok)) throw new Error(`gateway token printed no JWT: ${out}`);
  return tok;
}

// ------------------------------------------------------------------ browser

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * A fresh Chromium (own user-data dir) with one page.
 * Collects console errors/warnings and page errors in `problems`.
 * Resolves to { context, page, problems, close() }.
 */
export async function openBrowser({ viewport = { width: 1366, height: 800 } } = {}) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install the Debian package (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  const userDataDir = mkdtempSync(join(tmpdir(), 'gw-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport,
      timeout: T_START,
    });
  } catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  }
  context.setDefaultTimeout(T_LONG);
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') {
      const loc = m.location();
      problems.push(`console.${m.type()}: ${m.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e && e.stack ? e.stack : e}`));
  let closed = false;
  return {
    context,
    page,
    problems,
    async close() {
      if (closed) return;
      closed = true;
      try { await context.close(); } catch { /* browser already gone */ }
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Screenshot into tests/browser/artifacts/ (created on demand). Returns the path. */
export async function screenshot(page, name, opts = {}) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name.endsWith('.png') ? name : `${name}.png`);
  if (opts.fullPage) {
    // Log rows use `content-visibility: auto`: rows outside the viewport are
    // not painted until scrolled to, which a full-page capture never does.
    // Set through the CSSOM: the page's Content-Security-Policy refuses an
    // injected <style> element.
    const reveal = (on) => document.querySelectorAll('.logs li')
      .forEach((li) => { li.style.contentVisibility = on ? 'visible' : ''; });
    await page.evaluate(reveal, true);
    try {
      await page.screenshot({ path, ...opts });
    } finally {
      await page.evaluate(reveal, false).catch(() => {});
    }
  } else {
    await page.screenshot({ path, ...opts });
  }
  return path;
}

// What Chromium itself logs while the gateway is down (a refused WebSocket,
// a refused fetch of /api/status): network noise, not page errors.
const NETWORK_NOISE = [
  /^console\.error: WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws\?[^']*' failed: /,
  /^console\.error: Failed to load resource: net::ERR_CONNECTION_(REFUSED|RESET|CLOSED)/,
];

/** `problems` without the messages Chromium logs for refused connections. */
export function withoutNetworkNoise(problems) {
  return problems.filter((p) => !NETWORK_NOISE.some((re) => re.test(p)));
}

/**
 * Run `body`; on failure save a screenshot `<name>-failure.png` and attach the
 * gateway output to the error, then rethrow.
 */
export async function withDiagnostics(name, page, gateways, body) {
  try {
    return await body();
  } catch (e) {
    try { if (page && !page.isClosed()) await screenshot(page, `${name}-failure`, { fullPage: true }); } catch { /* ignore */ }
    // What the page thought: connection, session, toasts on screen.
    try {
      if (page && !page.isClosed() && e && typeof e === 'object') {
        const seen = await page.evaluate(() => {
          const s = window.__dashboard ? window.__dashboard.state() : {};
          return {
            connection: s.connection, attempt: s.attempt, session: s.session, resumed: s.resumed, rtt: s.rtt,
            detail: (document.querySelector('#conn-detail') || {}).textContent,
            toasts: [...document.querySelectorAll('.toast')].map((t) => t.textContent),
          };
        });
        e.message += `\n--- page ---\n${JSON.stringify(seen)}`;
      }
    } catch { /* ignore */ }
    const logs = (gateways || []).filter(Boolean).map((g) => `--- gateway pid ${g.pid} output ---\n${g.output()}`).join('\n');
    if (logs && e && typeof e === 'object') e.message += `\n${logs}`;
    throw e;
  }
}

/** Poll `fn` until it returns a truthy value; returns that value. */
export async function waitFor(fn, { timeout = T_LONG, interval = 100, message = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = null;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ------------------------------------------------------------------ page reading

/** Open the console with a token in the fragment and wait until it is live with quotes. */
export async function openLive(page, gw, token = gw.token) {
  await page.goto(`${gw.url}/#token=${token}`, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#conn-state[data-state="live"]', { timeout: T_LONG });
  await page.waitForSelector('#quotes tbody tr[data-symbol]', { timeout: T_LONG });
}

/** Text of every quote row: { SYMBOL: "bid|ask|spread|time" }. */
export function quoteTexts(page) {
  return page.$$eval('#quotes tbody tr[data-symbol]', (rows) => Object.fromEntries(rows.map((r) => [
    r.dataset.symbol,
    ['.bid', '.ask', '.spread', '.time'].map((c) => r.querySelector(c).textContent).join('|'),
  ])));
}

// Same formatting as the page (en-US, two decimals, rounded to cents, '+' on positives).
const money = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const cents = (n) => Math.round(n * 100) / 100 + 0;
export const fmtMoney = (n) => money.format(cents(n));
export const fmtSigned = (n) => { const c = cents(n); return (c > 0 ? '+' : '') + money.format(c); };

/** GET /api/status with the token. */
export async function apiStatus(gw, token = gw.token) {
  const res = await fetch(`${gw.url}/api/status`, { headers: { Authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`/api/status: HTTP ${res.status}`);
  return res.json();
}

// ------------------------------------------------------------------ reference client

/**
 * A socket.io-client (Node, websocket transport) subscribed to every channel,
 * the reference the page is compared with. Keeps the latest values of the
 * state channels (`keep` of each, newest last), every quote per symbol (last
 * `keep`), and every log entry and signal received.
 */
export function watcher(url, token, { keep = 4 } = {}) {
  const w = {
    positions: [], orders: [], account: [],
    quotes: {},                  // symbol -> last `keep` quotes
    logs: [],                    // every log entry, in arrival order
    signals: new Map(),          // uuid -> latest signal
    signalOrder: [],             // uuids in arrival order
    errors: [],
    connected: null,
  };
  const push = (arr, v) => { arr.push(v); if (arr.length > keep) arr.shift(); };
  const sock = io(url, { auth: { token }, transports: ['websocket'], reconnection: false, timeout: T_LONG });
  sock.on('connected', (d) => { w.connected = d; sock.emit('subscribe', { channels: CHANNELS }); });
  sock.on('quotes', (q) => push(w.quotes[q.symbol] || (w.quotes[q.symbol] = []), q));
  sock.on('positions_update', (d) => push(w.positions, d));
  sock.on('orders_update', (d) => push(w.orders, d));
  sock.on('account_update', (d) => push(w.account, d));
  sock.on('logs_update', (d) => w.logs.push(d));
  sock.on('signals_update', (d) => {
    if (!w.signals.has(d.uuid)) w.signalOrder.push(d.uuid);
    w.signals.set(d.uuid, d);
  });
  sock.on('error', (d) => w.errors.push(d));
  sock.on('connect_error', (e) => w.errors.push({ connect_error: e.message }));
  w.logSeqs = () => w.logs.map((l) => l.seq);
  w.close = () => sock.close();
  return w;
}

/** The `seq` of every log row on the page (DOM order: newest first). */
export function pageLogSeqs(page) {
  return page.$$eval('#logs li[data-seq]', (lis) => lis.map((li) => Number(li.dataset.seq)));
}
