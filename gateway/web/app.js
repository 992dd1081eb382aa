/* MT5 Trading Dashboard: browser console for the gateway's plain WebSocket.
 *
 * Protocol (contract sections 2-6): JSON text frames {"event": "...", "data": ...}
 * both ways on ws(s)://<host>/ws?token=<jwt>[&session=<resume id>&last_logs=N&last_signals=N].
 *
 * Rendering rule: WebSocket handlers only update plain objects and mark what
 * changed; one requestAnimationFrame pass writes the DOM (changed rows/cells
 * only). Untrusted strings are only ever written with textContent.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- config
  var CHANNELS = ['quotes', 'positions', 'orders', 'logs', 'signals', 'account'];
  var HEARTBEAT_MS = 5000;
  var STALE_MS = 20000;            // no frame for this long while a heartbeat is due: reconnect
  var HELLO_MS = 15000;            // no `connected` this long after opening a socket: try again
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_CAP_MS = 10000;
  var STATUS_POLL_MS = 5000;
  var LOG_CAP = 500;
  var SIGNAL_CAP = 100;
  var TOAST_MS = 6000;
  var TOAST_MAX = 4;
  var MARGIN_WARN = 200;           // margin level % under which the value is a warning
  var MARGIN_DANGER = 100;         // ... and under which it is a danger
  var TOKEN_KEY = 'mt5.dashboard.token';
  var LEVELS = { DEBUG: 0, INFO: 1, WARNING: 2, WARN: 2, ERROR: 3, CRITICAL: 4, FATAL: 4 };

  // ---------------------------------------------------------------- state
  var token = null;
  var ws = null;
  var wsSeq = 0;                   // identifies the current socket; stale callbacks compare against it
  var conn = {
    state: 'connecting',           // connecting | live | reconnecting | auth failed | disconnected
    attempt: 0,
    retryAt: 0,
    detail: '',
    rtt: null,
    session: null,
    resumed: false,
    serverTime: null
  };
  var everConnected = false;       // on the current socket
  var pendingDisconnect = null;    // last `disconnected` payload on the current socket
  var authErrorCode = null;        // UNAUTHORIZED / TOKEN_EXPIRED received before `connected`
  var otherErrorCode = null;       // any other error code received before `connected`
  var heartbeatTimer = 0;
  var retryTimer = 0;
  var helloTimer = 0;
  var lastFrameAt = 0;
  var statusTimer = 0;
  var statusKey = '';
  var statusGen = 0;               // answers of older polls are ignored

  var quotes = Object.create(null);       // symbol -> {symbol,bid,ask,spread,timestamp,digits,dir}
  var dirtyQuotes = new Set();
  var positions = [];
  var positionsDirty = false;
  var orders = [];
  var ordersDirty = false;
  var account = null;
  var accountDirty = false;

  var logs = [];                   // shown entries, oldest first, at most LOG_CAP
  var logsIncoming = [];           // accepted but not yet rendered, oldest first
  var logsPaused = [];             // held while paused, oldest first
  var pausedCount = 0;             // entries received while paused (may exceed the buffer)
  var paused = false;
  var logFilter = 'all';
  var logsRebuild = false;
  var lastLogSeq = null;
  var maxLogTs = -Infinity;        // newest timestamp seen on logs (ms)

  var signals = [];                // newest first, at most SIGNAL_CAP
  var signalsByUuid = new Map();
  var dirtySignals = new Set();    // uuids to (re)render
  var signalsStructDirty = false;
  var lastSignalSeq = null;
  var maxSignalTs = -Infinity;

  var connDirty = true;
  var rafId = 0;
  var renderCount = 0;             // DOM passes so far (for the test hook)
  var quoteCount = 0;              // quote events received so far

  // ---------------------------------------------------------------- DOM
  function $(id) { return document.getElementById(id); }
  var el = {};

  function h(tag, className, text) {
    var n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }

  function setSign(node, v) {
    v = isNum(v) ? Math.round(v * 100) : 0;
    var cls = v > 0 ? 'pos' : v < 0 ? 'neg' : 'zero';
    if (node.dataset.sign !== cls) node.dataset.sign = cls;
  }

  // ---------------------------------------------------------------- formatting
  var moneyFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  // Decimals in the shortest representation of a number as received.
  // Float noise (1.0849999999999999) is folded to 8 significant decimals first.
  function decimalsOf(n) {
    if (!isNum(n)) return 0;
    var s = String(n);
    var d;
    var e = s.search(/e/i);
    if (e >= 0) {
      var mant = s.slice(0, e), exp = Number(s.slice(e + 1));
      var dot = mant.indexOf('.');
      d = Math.max(0, (dot < 0 ? 0 : mant.length - dot - 1) - exp);
    } else {
      var i = s.indexOf('.');
      d = i < 0 ? 0 : s.length - i - 1;
    }
    if (d > 8) return decimalsOf(Number(n.toFixed(8)));
    return d;
  }

  function fmtFixed(n, digits) {
    if (!isNum(n)) return n === null || n === undefined ? '—' : String(n);
    return n.toFixed(Math.min(20, digits));
  }

  // Rounded to cents first so that -0.001 shows as 0.00, not -0.00.
  function cents(n) { return Math.round(n * 100) / 100 + 0; }

  function fmtMoney(n) {
    return isNum(n) ? moneyFmt.format(cents(n)) : (n === null || n === undefined ? '—' : String(n));
  }

  function fmtSigned(n) {
    if (!isNum(n)) return fmtMoney(n);
    n = cents(n);
    return (n > 0 ? '+' : '') + moneyFmt.format(n);
  }

  function fmtVolume(n) {
    if (!isNum(n)) return String(n);
    return n.toFixed(Math.max(2, decimalsOf(n)));
  }

  function fmtPrice(n, symbol) {
    if (!isNum(n)) return n === null || n === undefined ? '—' : String(n);
    var q = quotes[symbol];
    var d = q ? Math.max(q.digits, decimalsOf(n)) : decimalsOf(n);
    return n.toFixed(d);
  }

  function fmtLevel(n) { return isNum(n) && n === 0 ? '—' : n; }

  function pad2(n) { return n < 10 ? '0' + n : String(n); }
  function pad3(n) { return n < 10 ? '00' + n : n < 100 ? '0' + n : String(n); }

  function parseTime(v) {
    if (v instanceof Date) return v;
    if (typeof v === 'number') return new Date(v < 1e12 ? v * 1000 : v);
    if (typeof v === 'string') return new Date(v);
    return new Date(NaN);
  }

  function fmtClock(v, ms) {
    var d = parseTime(v);
    if (isNaN(d.getTime())) return v === null || v === undefined ? '—' : String(v);
    var s = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
    return ms ? s + '.' + pad3(d.getMilliseconds()) : s;
  }

  // `short`: no year when it is this year's (the cell's title has the full timestamp).
  function fmtDateTime(v, short) {
    var d = parseTime(v);
    if (isNaN(d.getTime())) return v === null || v === undefined ? '—' : String(v);
    var year = short && d.getFullYear() === new Date().getFullYear() ? '' : d.getFullYear() + '-';
    return year + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' +
      pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  }

  function fmtPercent(c) {
    if (!isNum(c)) return '—';
    var p = c <= 1 ? c * 100 : c;   // tolerate a confidence already given in percent
    return (Math.round(p * 10) / 10) + '%';
  }

  function fmtUptime(s) {
    if (!isNum(s)) return String(s);
    s = Math.floor(s);
    var d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
    if (d) return d + 'd ' + hh + 'h';
    if (hh) return hh + 'h ' + pad2(mm) + 'm';
    if (mm) return mm + 'm ' + pad2(ss) + 's';
    return ss + 's';
  }

  function str(v) { return v === null || v === undefined ? '' : String(v); }

  // ---------------------------------------------------------------- token
  function decodeJwt(t) {
    try {
      var part = t.split('.')[1];
      if (!part) return null;
      var b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      while (b64.length % 4) b64 += '=';
      var bin = atob(b64);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      var claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === 'object' ? claims : null;
    } catch (e) {
      return null;
    }
  }

  function cleanToken(t) {
    t = str(t).trim();
    if (/^bearer\s+/i.test(t)) t = t.replace(/^bearer\s+/i, '');
    return t;
  }

  function storageGet() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function storageSet(v) {
    try {
      if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: keep the token in memory only */ }
  }

  function tokenFromFragment() {
    var hash = location.hash ? location.hash.slice(1) : '';
    if (!hash) return null;
    var params = new URLSearchParams(hash);
    var t = params.get('token');
    if (t === null) return null;
    params.delete('token');
    var rest = params.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return cleanToken(t) || null;
  }

  function renderTokenInfo() {
    var c = token ? decodeJwt(token) : null;
    var parts = [];
    if (c) {
      if (c.sub) parts.push(String(c.sub));
      if (c.account) parts.push('acct ' + String(c.account));
      if (isNum(c.exp)) {
        // The time alone when it expires today, else the date too (a 24 h
        // token would otherwise seem to have expired a minute ago).
        var exp = new Date(c.exp * 1000);
        parts.push('exp ' + (exp.toDateString() === new Date().toDateString() ? fmtClock(exp) : fmtDateTime(exp)));
      }
    }
    setText(el.tokenInfo, parts.join(' · '));
    el.logout.hidden = !token;
  }

  // ---------------------------------------------------------------- auth form
  function showAuth(message) {
    el.auth.hidden = false;
    setText(el.authError, message || '');
    el.authError.hidden = !message;
    el.tokenInput.value = '';
    // Focus the field so keyboard users can paste right away.
    setTimeout(function () { try { el.tokenInput.focus(); } catch (e) { /* ignore */ } }, 0);
  }

  function hideAuth() {
    // Focus inside the form would be lost with it: move it to the dashboard.
    var hadFocus = el.auth.contains(document.activeElement);
    el.auth.hidden = true;
    setText(el.authError, '');
    if (hadFocus) el.main.focus();
  }

  // A new token of the same user and account renews the open connection
  // in place (`refresh`: no reconnect, no resume); true when it did. The
  // server answers `refreshed`, or an `error` and the old token runs on.
  function refreshInPlace(t) {
    var now = token ? decodeJwt(token) : null;
    var next = decodeJwt(t);
    if (!ws || !now || !next || now.sub !== next.sub || now.account !== next.account) return false;
    if (!send('refresh', { token: t })) return false;
    token = t;
    storageSet(t);
    renderTokenInfo();
    return true;
  }

  function onAuthSubmit(ev) {
    ev.preventDefault();
    var t = cleanToken(el.tokenInput.value);
    if (!t) {
      setText(el.authError, 'Paste a token first.');
      el.authError.hidden = false;
      el.tokenInput.focus();
      return;
    }
    if (refreshInPlace(t)) { hideAuth(); return; }
    token = t;
    storageSet(t);
    hideAuth();
    renderTokenInfo();
    conn.session = null;          // a new identity never resumes another one's session
    conn.attempt = 0;
    connect();
  }

  function logout() {
    stopSocket();
    clearTimeout(retryTimer);
    stopStatusPoll();
    token = null;
    storageSet(null);
    conn.session = null;
    setConn('disconnected', 'No token');
    renderTokenInfo();
    showAuth('');
  }

  // ---------------------------------------------------------------- connection
  function setConn(state, detail) {
    conn.state = state;
    if (detail !== undefined) conn.detail = detail;
    connDirty = true;
    schedule();
  }

  function wsUrl() {
    var proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    var url = proto + '//' + location.host + '/ws?token=' + encodeURIComponent(token);
    if (conn.session) {
      url += '&session=' + encodeURIComponent(conn.session);
      // What this page holds: the gateway replays from here, so nothing
      // written to a connection that died silently is lost.
      if (lastLogSeq !== null) url += '&last_logs=' + lastLogSeq;
      if (lastSignalSeq !== null) url += '&last_signals=' + lastSignalSeq;
    }
    return url;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    stopSocket();
    if (!token) { showAuth(''); return; }
    everConnected = false;
    pendingDisconnect = null;
    authErrorCode = null;
    otherErrorCode = null;
    setConn(conn.attempt > 0 ? 'reconnecting' : 'connecting', conn.attempt > 0 ? conn.detail : '');
    conn.retryAt = 0;
    var id = ++wsSeq;
    var sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect('Cannot open WebSocket');
      return;
    }
    ws = sock;
    // A proxy that accepts the socket but never passes `connected` on (or a
    // handshake that hangs) must not leave the page waiting forever.
    clearTimeout(helloTimer);
    helloTimer = setTimeout(function () {
      if (id !== wsSeq || everConnected) return;
      stopSocket();
      scheduleReconnect('No answer from server');
    }, HELLO_MS);
    sock.onopen = function () {
      if (id !== wsSeq) return;
      lastFrameAt = Date.now();
    };
    sock.onmessage = function (ev) {
      if (id !== wsSeq) return;
      lastFrameAt = Date.now();
      if (typeof ev.data !== 'string') return;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (Array.isArray(msg)) { for (var i = 0; i < msg.length; i++) dispatch(msg[i]); } else dispatch(msg);
    };
    sock.onerror = function () { /* a close event always follows */ };
    sock.onclose = function (ev) {
      if (id !== wsSeq) return;
      clearTimeout(helloTimer);
      ws = null;
      stopHeartbeat();
      onSocketClosed(ev.code, ev.reason || '');
    };
  }

  function stopSocket() {
    stopHeartbeat();
    clearTimeout(helloTimer);
    if (ws) {
      var s = ws;
      ws = null;
      wsSeq++;                     // callbacks of the old socket become no-ops
      try { s.close(1000, 'client closing'); } catch (e) { /* ignore */ }
    }
  }

  function send(event, data) {
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify({ event: event, data: data })); return true; } catch (e) { return false; }
  }

  function authMessage(code) {
    return code === 'TOKEN_EXPIRED' ? 'Token expired' : 'Authentication failed: ' + (code || 'UNAUTHORIZED');
  }

  function authFailed(code) {
    clearTimeout(retryTimer);
    retryTimer = 0;
    stopStatusPoll();
    conn.session = null;
    conn.attempt = 0;
    var msg = authMessage(code);
    setConn('auth failed', msg);
    token = null;
    storageSet(null);
    renderTokenInfo();
    showAuth(msg);
  }

  function codeFromText(s) {
    s = str(s);
    if (/\bTOKEN_EXPIRED\b|\btoken (has )?expired\b/i.test(s)) return 'TOKEN_EXPIRED';
    if (/\bUNAUTHORI[SZ]ED\b|\bunauthenticated\b|\binvalid token\b/i.test(s)) return 'UNAUTHORIZED';
    return null;
  }

  function onSocketClosed(code, reason) {
    if (!token) return;            // logged out meanwhile
    if (!everConnected) {
      // Closed before `connected`: an auth refusal or a network failure.
      var c = authErrorCode || codeFromText(reason);
      // A policy close without any other explanation is taken as an auth refusal;
      // one that carries another code (e.g. UPSTREAM_UNAVAILABLE while draining) is retried.
      if (!c && !otherErrorCode && !/^[A-Z][A-Z_]+$/.test(reason) && (code === 1008 || code === 4001 || code === 4003 || code === 4401 || code === 4403 || code === 3000 || code === 3003)) {
        c = 'UNAUTHORIZED';
      }
      if (c) { authFailed(c); return; }
      if (code === 1006 || code === 1002 || code === 1015) {
        // The browser hides an HTTP 401 on the upgrade behind 1006: ask /api/status.
        probeAuth();
        return;
      }
      scheduleReconnect('Connection failed' + (code ? ' (' + code + ')' : ''));
      return;
    }
    pollStatus();                  // the replica may be gone: don't leave its status up
    var d = pendingDisconnect;
    if (d && d.reconnect === false) {
      conn.attempt = 0;
      setConn('disconnected', str(d.reason) || 'Disconnected by server');
      return;
    }
    scheduleReconnect(d ? str(d.reason) || 'Disconnected by server' : 'Connection lost' + (code && code !== 1006 ? ' (' + code + ')' : ''));
  }

  function probeAuth() {
    var t = token;
    var id = wsSeq;
    var claims = decodeJwt(t);
    fetchStatus(t, 4000).then(function (res) {
      if (t !== token || id !== wsSeq || ws) return;
      if (res.status === 401 || res.status === 403) {
        var c = res.code || (claims && isNum(claims.exp) && claims.exp * 1000 < Date.now() ? 'TOKEN_EXPIRED' : 'UNAUTHORIZED');
        authFailed(c);
      } else {
        scheduleReconnect('Connection failed');
      }
    });
  }

  function backoffDelay(attempt) {
    var d = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, Math.max(0, attempt - 1)));
    // 0.5 s, 1 s, 2 s, ... capped at 10 s, each spread by +-20 % so that many
    // dashboards cut off together do not come back in lockstep.
    return Math.round(Math.min(BACKOFF_CAP_MS, d * (0.8 + Math.random() * 0.4)));
  }

  function scheduleReconnect(detail) {
    clearTimeout(retryTimer);
    conn.attempt += 1;
    var delay = backoffDelay(conn.attempt);
    conn.retryAt = Date.now() + delay;
    setConn('reconnecting', detail);
    retryTimer = setTimeout(function () { retryTimer = 0; connect(); }, delay);
  }

  function reconnectNow() {
    if (!token) { showAuth(''); return; }
    if (conn.state === 'disconnected') conn.attempt = 0;
    connect();
  }

  // ---------------------------------------------------------------- heartbeat
  function startHeartbeat() {
    stopHeartbeat();
    sendHeartbeat();
    heartbeatTimer = setInterval(function () {
      if (!ws) return;
      if (Date.now() - lastFrameAt > STALE_MS) {
        // Nothing at all (not even heartbeat_ack) for a while: the link is dead.
        stopSocket();
        scheduleReconnect('No data from server');
        return;
      }
      sendHeartbeat();
    }, HEARTBEAT_MS);
  }

  function sendHeartbeat() { send('heartbeat', { timestamp: Date.now() }); }

  function stopHeartbeat() {
    if (heartbeatTimer) clearInterval(heartbeatTimer);
    heartbeatTimer = 0;
  }

  // ---------------------------------------------------------------- events
  function dispatch(msg) {
    if (!msg || typeof msg !== 'object' || typeof msg.event !== 'string') return;
    var d = msg.data;
    switch (msg.event) {
      case 'connected': onConnected(d || {}); break;
      case 'subscribed': break;
      case 'unsubscribed': break;
      case 'quotes': onQuote(d); break;
      case 'positions_update': if (Array.isArray(d)) { positions = d; positionsDirty = true; schedule(); } break;
      case 'orders_update': if (Array.isArray(d)) { orders = d; ordersDirty = true; schedule(); } break;
      case 'account_update': if (d && typeof d === 'object') { account = d; accountDirty = true; schedule(); } break;
      case 'logs_update': onLog(d); break;
      case 'signals_update': onSignal(d); break;
      case 'heartbeat_ack': onHeartbeatAck(d); break;
      case 'refreshed': renderTokenInfo(); break;
      case 'disconnected': onDisconnected(d || {}); break;
      case 'error': onError(d || {}); break;
      default: break;
    }
  }

  function onConnected(d) {
    var requested = conn.session;
    everConnected = true;
    conn.session = typeof d.session === 'string' && d.session ? d.session : null;
    conn.resumed = !!(requested && conn.session === requested);
    conn.serverTime = d.server_time || null;
    conn.attempt = 0;
    conn.retryAt = 0;
    hideAuth();
    setConn('live', conn.resumed ? 'session resumed' : '');
    send('subscribe', { channels: CHANNELS.slice() });
    startHeartbeat();
    // Poll /api/status now that the token is known good (and this may be
    // another replica than before); it keeps polling while reconnecting.
    startStatusPoll();
    if (requested && !conn.resumed) toast('info', 'Reconnected with a new session; some log entries may be missing.');
  }

  function onHeartbeatAck(d) {
    if (!d || !isNum(d.client_timestamp)) return;
    var rtt = Date.now() - d.client_timestamp;
    if (rtt >= 0 && rtt < 600000) { conn.rtt = rtt; connDirty = true; schedule(); }
  }

  function onDisconnected(d) {
    pendingDisconnect = { reason: str(d.reason), reconnect: d.reconnect !== false };
    conn.detail = str(d.reason);
    connDirty = true;
    schedule();
    toast(d.reconnect === false ? 'error' : 'info', 'Disconnected: ' + (str(d.reason) || 'by server') + (d.reconnect === false ? '' : ' (reconnecting)'));
  }

  function onError(d) {
    var code = str(d.code);
    if (!everConnected && (code === 'UNAUTHORIZED' || code === 'TOKEN_EXPIRED')) {
      authErrorCode = code;       // the server closes the socket right after
      return;
    }
    if (!everConnected) otherErrorCode = code || 'ERROR';
    if (code === 'SESSION_NOT_RESUMABLE' && !everConnected) conn.session = null;   // do not ask for it again
    var text = (code ? code + ': ' : '') + (str(d.error) || 'Error') + (d.details ? ' - ' + str(d.details) : '');
    toast('error', text, code);
  }

  function onQuote(d) {
    if (!d || typeof d !== 'object' || typeof d.symbol !== 'string') return;
    quoteCount++;
    var q = quotes[d.symbol];
    if (!q) {
      q = quotes[d.symbol] = { symbol: d.symbol, bid: null, ask: null, spread: null, timestamp: null, digits: 0, dir: 0, rendered: false };
    }
    if (isNum(d.bid)) {
      if (isNum(q.bid) && d.bid !== q.bid) q.dir = d.bid > q.bid ? 1 : -1;
      q.bid = d.bid;
      q.digits = Math.max(q.digits, decimalsOf(d.bid));
    }
    if (isNum(d.ask)) { q.ask = d.ask; q.digits = Math.max(q.digits, decimalsOf(d.ask)); }
    if (d.spread !== undefined) q.spread = d.spread;
    if (d.timestamp !== undefined) q.timestamp = d.timestamp;
    dirtyQuotes.add(d.symbol);
    schedule();
  }

  function levelOf(level) {
    var s = LEVELS[str(level).toUpperCase()];
    return s === undefined ? 1 : s;
  }

  function onLog(d) {
    if (!d || typeof d !== 'object') return;
    // Drop a duplicate or older seq (resume replays, redelivery after a replica
    // crash). The one exception is a seq at or below the last one that is newer
    // than anything seen: the sequence restarted (e.g. a restarted standalone
    // gateway), and a replayed duplicate can never be newer than its original.
    var ts = Date.parse(d.timestamp);
    if (isNum(d.seq)) {
      if (lastLogSeq !== null && d.seq <= lastLogSeq && !(ts > maxLogTs)) return;
      lastLogSeq = d.seq;
    }
    if (ts > maxLogTs) maxLogTs = ts;
    if (paused) {
      pausedCount++;
      logsPaused.push(d);
      if (logsPaused.length > LOG_CAP) logsPaused.splice(0, logsPaused.length - LOG_CAP);
    } else {
      logsIncoming.push(d);
      if (logsIncoming.length > LOG_CAP) logsIncoming.splice(0, logsIncoming.length - LOG_CAP);
    }
    schedule();
  }

  function onSignal(d) {
    if (!d || typeof d !== 'object') return;
    var ts = Date.parse(d.timestamp);
    if (isNum(d.seq)) {
      if (lastSignalSeq !== null && d.seq <= lastSignalSeq && !(ts > maxSignalTs)) return;
      lastSignalSeq = d.seq;
    }
    if (ts > maxSignalTs) maxSignalTs = ts;
    if (typeof d.uuid !== 'string' || !d.uuid) d.uuid = str(d.uuid) || ('local-' + Date.now() + '-' + Math.random());
    var uuid = d.uuid;
    var prev = signalsByUuid.get(uuid);
    if (prev) {
      // Same signal again (e.g. its status moved on): update it in place.
      var idx = signals.indexOf(prev);
      if (idx >= 0) signals[idx] = d;
      signalsByUuid.set(uuid, d);
    } else {
      signals.unshift(d);
      signalsByUuid.set(uuid, d);
      while (signals.length > SIGNAL_CAP) {
        var gone = signals.pop();
        signalsByUuid.delete(str(gone.uuid));
      }
      signalsStructDirty = true;
    }
    dirtySignals.add(uuid);
    schedule();
  }

  // ---------------------------------------------------------------- rendering
  function schedule() {
    if (!rafId) rafId = requestAnimationFrame(render);
  }

  function render() {
    rafId = 0;
    renderCount++;
    if (connDirty) renderConn();
    if (dirtyQuotes.size) renderQuotes();
    if (positionsDirty) renderPositions();
    if (ordersDirty) renderOrders();
    if (accountDirty) renderAccount();
    if (logsRebuild || logsIncoming.length) renderLogs();
    renderLogsPaused();
    if (signalsStructDirty || dirtySignals.size) renderSignals();
  }

  // -- connection strip
  // #conn-state reads e.g. "reconnecting (attempt 2, in 1.3s)"; the ticking
  // countdown sits in an aria-hidden span so screen readers only hear state changes.
  var connParts = null;
  function renderConn() {
    connDirty = false;
    if (!connParts) {
      connParts = [h('span', 'st'), h('span', 'countdown'), h('span')];
      connParts[1].setAttribute('aria-hidden', 'true');
      el.connState.replaceChildren(connParts[0], connParts[1], connParts[2]);
    }
    var a = conn.state, b = '', c = '';
    if (conn.state === 'reconnecting') {
      a = 'reconnecting (attempt ' + conn.attempt;
      if (conn.retryAt) b = ', in ' + (Math.max(0, conn.retryAt - Date.now()) / 1000).toFixed(1) + 's';
      c = ')';
    }
    setText(connParts[0], a);
    setText(connParts[1], b);
    setText(connParts[2], c);
    var ds = conn.state.replace(/\s+/g, '-');
    if (el.connState.dataset.state !== ds) {
      el.connState.dataset.state = ds;
      el.conn.dataset.state = ds;
      document.body.dataset.conn = ds;
    }
    setText(el.connDetail, conn.detail || '');
    setText(el.rtt, conn.rtt === null ? 'RTT —' : 'RTT ' + Math.round(conn.rtt) + ' ms');
    el.rtt.dataset.ms = conn.rtt === null ? '' : String(Math.round(conn.rtt));
    el.reconnectBtn.hidden = !(token && (conn.state === 'reconnecting' || conn.state === 'disconnected'));
  }

  // -- quotes
  var quoteRows = new Map();       // symbol -> {tr, bid, ask, spread, time, flip, shown:{}}
  var quoteSymbols = [];           // sorted

  function quoteRow(sym) {
    var r = quoteRows.get(sym);
    if (r) return r;
    var tr = h('tr');
    tr.dataset.symbol = sym;
    var th = h('th', 'symbol', sym);
    th.scope = 'row';
    r = {
      tr: tr, bid: h('td', 'num bid'), ask: h('td', 'num ask'), spread: h('td', 'num spread'), time: h('td', 'num time'),
      timeMain: document.createTextNode(''), timeMs: h('span', 'ms'), flip: false, shown: {}
    };
    r.time.append(r.timeMain, r.timeMs);   // the milliseconds are hidden on narrow screens
    tr.append(th, r.bid, r.ask, r.spread, r.time);
    // Insert in symbol order.
    var i = 0;
    while (i < quoteSymbols.length && quoteSymbols[i] < sym) i++;
    var before = i < quoteSymbols.length ? quoteRows.get(quoteSymbols[i]).tr : null;
    el.quotesBody.insertBefore(tr, before);
    quoteSymbols.splice(i, 0, sym);
    quoteRows.set(sym, r);
    return r;
  }

  function renderQuotes() {
    dirtyQuotes.forEach(function (sym) {
      var q = quotes[sym];
      var r = quoteRow(sym);
      var bid = fmtFixed(q.bid, q.digits), ask = fmtFixed(q.ask, q.digits);
      if (r.shown.bid !== bid) {
        r.bid.textContent = bid;
        if (r.shown.bid !== undefined && q.dir) {
          // Alternate between two identical animations so each change restarts it.
          r.flip = !r.flip;
          var cls = (q.dir > 0 ? 'up-' : 'down-') + (r.flip ? 'a' : 'b');
          r.tr.classList.remove('up-a', 'up-b', 'down-a', 'down-b');
          r.tr.classList.add(cls);
          r.tr.dataset.dir = q.dir > 0 ? 'up' : 'down';
        }
        r.shown.bid = bid;
      }
      if (r.shown.ask !== ask) { r.ask.textContent = ask; r.shown.ask = ask; }
      var spread = q.spread === null || q.spread === undefined ? '—' : String(q.spread);
      if (r.shown.spread !== spread) { r.spread.textContent = spread; r.shown.spread = spread; }
      var t = fmtClock(q.timestamp, true);
      if (r.shown.time !== t) {
        var ms = /^\d\d:\d\d:\d\d(\.\d+)$/.exec(t);
        r.timeMain.data = ms ? t.slice(0, 8) : t;
        setText(r.timeMs, ms ? ms[1] : '');
        r.shown.time = t;
      }
    });
    dirtyQuotes.clear();
    el.quotesEmpty.hidden = quoteSymbols.length > 0;
    setText(el.quotesMeta, quoteSymbols.length + (quoteSymbols.length === 1 ? ' symbol' : ' symbols'));
  }

  // -- keyed tables (positions, orders)
  function renderKeyed(body, rowsMap, items, columns, rowHook) {
    var seen = new Set();
    var prev = null;
    for (var i = 0; i < items.length; i++) {
      var it = items[i];
      if (!it || typeof it !== 'object') continue;
      var key = str(it.ticket);
      if (seen.has(key)) continue;
      seen.add(key);
      var r = rowsMap.get(key);
      if (!r) {
        var tr = h('tr');
        tr.dataset.ticket = key;
        var cells = columns.map(function (c) {
          var cell = h(c.th ? 'th' : 'td', c.cls);
          if (c.th) cell.scope = 'row';
          return cell;
        });
        tr.append.apply(tr, cells);
        r = { tr: tr, cells: cells };
        rowsMap.set(key, r);
      }
      for (var j = 0; j < columns.length; j++) {
        var c = columns[j];
        setText(r.cells[j], c.fmt(it));
        if (c.sign) setSign(r.cells[j], it[c.sign]);
        if (c.title) r.cells[j].title = str(it[c.title]);
      }
      if (rowHook) rowHook(r.tr, it);
      var want = prev ? prev.nextSibling : body.firstChild;
      if (want !== r.tr) body.insertBefore(r.tr, want);
      prev = r.tr;
    }
    rowsMap.forEach(function (r, key) {
      if (!seen.has(key)) { r.tr.remove(); rowsMap.delete(key); }
    });
    return seen.size;
  }

  function optPrice(v, sym) { return isNum(v) && v === 0 ? '—' : fmtPrice(v, sym); }

  var positionRows = new Map();
  var POSITION_COLS = [
    { cls: 'ticket', th: true, fmt: function (p) { return str(p.ticket); } },
    { cls: 'symbol', fmt: function (p) { return str(p.symbol); } },
    { cls: 'type', fmt: function (p) { return str(p.type); } },
    { cls: 'num volume', fmt: function (p) { return fmtVolume(p.volume); } },
    { cls: 'num price-open', fmt: function (p) { return fmtPrice(p.price_open, p.symbol); } },
    { cls: 'num price-current', fmt: function (p) { return fmtPrice(p.price_current, p.symbol); } },
    { cls: 'num sl', fmt: function (p) { return optPrice(p.sl, p.symbol); } },
    { cls: 'num tp', fmt: function (p) { return optPrice(p.tp, p.symbol); } },
    { cls: 'num swap', sign: 'swap', fmt: function (p) { return fmtMoney(p.swap); } },
    { cls: 'num commission', sign: 'commission', fmt: function (p) { return fmtMoney(p.commission); } },
    { cls: 'num profit', sign: 'profit', fmt: function (p) { return fmtSigned(p.profit); } },
    { cls: 'time', title: 'time', fmt: function (p) { return fmtDateTime(p.time, true); } },
    { cls: 'comment', fmt: function (p) { return str(p.comment); } }
  ];

  function sideHook(tr, it) {
    var side = /sell/i.test(str(it.type)) ? 'sell' : /buy/i.test(str(it.type)) ? 'buy' : '';
    if (tr.dataset.side !== side) tr.dataset.side = side;
  }

  function renderPositions() {
    positionsDirty = false;
    var n = renderKeyed(el.positionsBody, positionRows, positions, POSITION_COLS, sideHook);
    var total = 0, any = false;
    for (var i = 0; i < positions.length; i++) {
      var p = positions[i];
      if (p && isNum(p.profit)) { total += p.profit; any = true; }
    }
    total = Math.round(total * 100) / 100;
    setText(el.positionsTotal, any ? fmtSigned(total) : '—');
    setSign(el.positionsTotal, total);
    el.positionsTotal.dataset.value = String(total);
    el.positionsEmpty.hidden = n > 0;
    setText(el.positionsMeta, n ? n + ' open' : '');
    // The sum again in the panel header: the table's last columns are off
    // screen on a phone.
    setText(el.positionsPl, any ? 'P/L ' + fmtSigned(total) : '');
    setSign(el.positionsPl, total);
    el.positionsPl.hidden = !any;
  }

  var orderRows = new Map();
  var ORDER_COLS = [
    { cls: 'ticket', th: true, fmt: function (o) { return str(o.ticket); } },
    { cls: 'symbol', fmt: function (o) { return str(o.symbol); } },
    { cls: 'type', fmt: function (o) { return str(o.type); } },
    { cls: 'num volume', fmt: function (o) { return fmtVolume(o.volume); } },
    { cls: 'num price-open', fmt: function (o) { return fmtPrice(o.price_open, o.symbol); } },
    { cls: 'num sl', fmt: function (o) { return optPrice(o.sl, o.symbol); } },
    { cls: 'num tp', fmt: function (o) { return optPrice(o.tp, o.symbol); } },
    { cls: 'time', title: 'time_setup', fmt: function (o) { return fmtDateTime(o.time_setup, true); } },
    { cls: 'state', fmt: function (o) { return str(o.state); } },
    { cls: 'comment', fmt: function (o) { return str(o.comment); } }
  ];

  function renderOrders() {
    ordersDirty = false;
    var n = renderKeyed(el.ordersBody, orderRows, orders, ORDER_COLS, sideHook);
    el.ordersEmpty.hidden = n > 0;
    setText(el.ordersMeta, n ? n + ' pending' : '');
  }

  // -- account
  function renderAccount() {
    accountDirty = false;
    var a = account || {};
    setText(el.acc.balance, fmtMoney(a.balance));
    setText(el.acc.equity, fmtMoney(a.equity));
    setText(el.acc.margin, fmtMoney(a.margin));
    setText(el.acc.freeMargin, fmtMoney(a.free_margin));
    setText(el.acc.profit, fmtSigned(a.profit));
    setSign(el.acc.profit, a.profit);
    var ml = a.margin_level, mlState = '';
    if (isNum(ml) && ml > 0 && !(isNum(a.margin) && a.margin === 0)) {
      setText(el.acc.marginLevel, moneyFmt.format(ml) + ' %');
      mlState = ml < MARGIN_DANGER ? 'danger' : ml < MARGIN_WARN ? 'warning' : 'ok';
    } else {
      // MT5 reports 0 when no margin is used: nothing to warn about.
      setText(el.acc.marginLevel, isNum(ml) ? '—' : str(ml) || '—');
    }
    if (el.acc.marginLevel.dataset.state !== mlState) {
      el.acc.marginLevel.dataset.state = mlState;
      el.acc.marginLevel.title = mlState === 'danger' ? 'Margin level under ' + MARGIN_DANGER + ' %'
        : mlState === 'warning' ? 'Margin level under ' + MARGIN_WARN + ' %' : '';
    }
    setText(el.accCurrency, str(a.currency));
  }

  // -- logs
  function logVisible(d) {
    return logFilter === 'all' || levelOf(d.level) >= LEVELS[logFilter];
  }

  function logItem(d) {
    var li = h('li', 'log');
    if (isNum(d.seq)) li.dataset.seq = String(d.seq);
    var lvl = str(d.level).toUpperCase() || 'INFO';
    li.dataset.level = lvl;
    var t = h('time', 'ts', fmtClock(d.timestamp, true));
    if (typeof d.timestamp === 'string') { t.dateTime = d.timestamp; t.title = d.timestamp; }
    var level = h('span', 'level', lvl);
    level.dataset.level = lvl;
    var mod = h('span', 'module', str(d.module));
    var msg = h('span', 'message', str(d.message));
    li.append(t, level, mod, msg);
    if (d.extra && typeof d.extra === 'object' && Object.keys(d.extra).length) {
      var x;
      try { x = JSON.stringify(d.extra); } catch (e) { x = ''; }
      if (x.length > 400) x = x.slice(0, 400) + '…';
      li.append(h('span', 'extra', x));
    }
    return li;
  }

  function renderLogs() {
    var list = el.logs;
    if (logsIncoming.length) {
      for (var i = 0; i < logsIncoming.length; i++) logs.push(logsIncoming[i]);
      if (logs.length > LOG_CAP) logs.splice(0, logs.length - LOG_CAP);
    }
    if (logsRebuild) {
      logsRebuild = false;
      logsIncoming = [];
      var frag = document.createDocumentFragment();
      for (var j = logs.length - 1; j >= 0; j--) if (logVisible(logs[j])) frag.appendChild(logItem(logs[j]));
      list.replaceChildren(frag);
    } else if (logsIncoming.length) {
      var add = document.createDocumentFragment();
      var inc = logsIncoming;
      logsIncoming = [];
      var start = Math.max(0, inc.length - LOG_CAP);
      for (var k = inc.length - 1; k >= start; k--) if (logVisible(inc[k])) add.appendChild(logItem(inc[k]));
      list.insertBefore(add, list.firstChild);
      while (list.childElementCount > LOG_CAP) list.lastElementChild.remove();
    }
    el.logsEmpty.hidden = list.childElementCount > 0;
    if (!el.logsEmpty.hidden) setText(el.logsEmpty, logs.length ? 'No entries at this level.' : 'No log entries yet.');
  }

  function renderLogsPaused() {
    var txt = paused && pausedCount ? pausedCount + ' new' : '';
    setText(el.logsNew, txt);
    el.logsNew.hidden = !txt;
  }

  function togglePause() {
    paused = !paused;
    el.logsPause.setAttribute('aria-pressed', String(paused));
    setText(el.logsPause, paused ? 'Resume' : 'Pause');
    el.logsPanel.classList.toggle('paused', paused);
    if (!paused) {
      for (var i = 0; i < logsPaused.length; i++) logsIncoming.push(logsPaused[i]);
      if (logsIncoming.length > LOG_CAP) logsIncoming.splice(0, logsIncoming.length - LOG_CAP);
      logsPaused = [];
      pausedCount = 0;
    }
    schedule();
  }

  function onFilterChange() {
    logFilter = LEVELS[el.logLevel.value] !== undefined ? el.logLevel.value : 'all';
    logsRebuild = true;
    schedule();
  }

  // -- signals
  var signalItems = new Map();     // uuid -> li

  function signalKey(s) { return str(s.uuid); }

  function fillSignal(li, s) {
    var status = str(s.status).toLowerCase();
    var side = str(s.side).toLowerCase();
    li.dataset.status = status;
    li.dataset.side = side;
    if (isNum(s.seq)) li.dataset.seq = String(s.seq);

    var head = h('div', 'sig-head');
    head.append(
      h('span', 'sig-symbol', str(s.symbol)),
      h('span', 'sig-side side-' + (side === 'sell' ? 'sell' : side === 'buy' ? 'buy' : 'other'), side.toUpperCase()),
      h('span', 'sig-volume', fmtVolume(s.volume)),
      h('span', 'badge status status-' + (/^(approved|rejected|pending|executed|expired)$/.test(status) ? status : 'other'), status || '?')
    );
    var meta = h('div', 'sig-meta');
    var src = h('span', 'sig-source', str(s.source));
    var conf = h('span', 'sig-confidence', fmtPercent(s.confidence));
    conf.title = 'confidence';
    var tpsl = h('span', 'sig-tpsl', 'TP ' + str(s.tp) + ' · SL ' + str(s.sl));
    var t = h('time', 'ts', fmtClock(s.timestamp));
    if (typeof s.timestamp === 'string') { t.dateTime = s.timestamp; t.title = s.timestamp; }
    meta.append(src, conf, tpsl, t);

    var nodes = [head, meta];
    if (Array.isArray(s.validators) && s.validators.length) {
      var ul = h('ul', 'validators');
      ul.setAttribute('aria-label', 'Validators');
      for (var i = 0; i < s.validators.length; i++) {
        var v = s.validators[i] || {};
        var vli = h('li', 'validator');
        var ok = v.approved === true;
        vli.dataset.approved = String(ok);
        var mark = h('span', 'verdict ' + (ok ? 'ok' : 'no'), ok ? '✓' : '✗');
        mark.setAttribute('aria-hidden', 'true');
        var sr = h('span', 'sr-only', ok ? 'approved' : 'rejected');
        vli.append(
          mark, sr,
          h('span', 'v-name', str(v.name)),
          h('span', 'v-type', str(v.type)),
          h('span', 'v-confidence', fmtPercent(v.confidence)),
          h('span', 'v-reason', str(v.reason))
        );
        ul.appendChild(vli);
      }
      nodes.push(ul);
    }
    li.replaceChildren.apply(li, nodes);
  }

  function renderSignals() {
    var list = el.signals;
    dirtySignals.forEach(function (uuid) {
      var s = signalsByUuid.get(uuid);
      if (!s) return;
      var li = signalItems.get(uuid);
      if (!li) {
        li = h('li', 'signal');
        li.dataset.uuid = uuid;
        signalItems.set(uuid, li);
      }
      fillSignal(li, s);
    });
    dirtySignals.clear();
    if (signalsStructDirty) {
      signalsStructDirty = false;
      var keep = new Set();
      var prev = null;
      for (var i = 0; i < signals.length; i++) {
        var key = signalKey(signals[i]);
        var node = signalItems.get(key);
        if (!node) continue;
        keep.add(key);
        var want = prev ? prev.nextSibling : list.firstChild;
        if (want !== node) list.insertBefore(node, want);
        prev = node;
      }
      signalItems.forEach(function (node, key) {
        if (!keep.has(key)) { node.remove(); signalItems.delete(key); }
      });
    }
    el.signalsEmpty.hidden = signals.length > 0;
    setText(el.signalsMeta, signals.length ? String(signals.length) : '');
  }

  // ---------------------------------------------------------------- toasts
  function toast(kind, text, code) {
    // The same message again replaces the older copy instead of stacking.
    for (var n = el.toasts.firstElementChild; n; n = n.nextElementSibling) {
      if (n.textContent === text) { n.remove(); break; }
    }
    var t = h('div', 'toast toast-' + kind, text);
    if (code) t.dataset.code = code;
    el.toasts.appendChild(t);
    while (el.toasts.childElementCount > TOAST_MAX) el.toasts.firstElementChild.remove();
    setTimeout(function () { t.remove(); }, TOAST_MS);
  }

  // ---------------------------------------------------------------- status strip
  // Resolves to {status, body, code}; never rejects.
  function fetchStatus(t, timeoutMs) {
    var ctrl = typeof AbortController === 'function' ? new AbortController() : null;
    var timer = ctrl ? setTimeout(function () { ctrl.abort(); }, timeoutMs) : 0;
    return fetch('/api/status', {
      headers: { Authorization: 'Bearer ' + t, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctrl ? ctrl.signal : undefined
    }).then(function (res) {
      return res.text().then(function (txt) {
        var body = null;
        try { body = txt ? JSON.parse(txt) : null; } catch (e) { body = null; }
        var code = null;
        if (body && typeof body === 'object') code = codeFromText(body.code || body.error || '');
        if (!code && res.status === 401) code = codeFromText(txt);
        return { status: res.status, body: body, code: code };
      });
    }).catch(function () {
      return { status: 0, body: null, code: null };
    }).then(function (r) {
      clearTimeout(timer);
      return r;
    });
  }

  var STATUS_ORDER = ['mode', 'replica', 'clients', 'nats', 'redis', 'uptime_s', 'version'];
  var STATUS_LABEL = { uptime_s: 'uptime', clients: 'clients', replica: 'replica', mode: 'mode', nats: 'NATS', redis: 'Redis', version: 'v' };

  function renderStatus(body) {
    var key = body ? JSON.stringify(body) : '';
    if (key === statusKey) return;
    statusKey = key;
    var frag = document.createDocumentFragment();
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      frag.appendChild(h('li', 'chip muted', 'status unavailable'));
      el.statusStrip.dataset.available = 'false';
    } else {
      el.statusStrip.dataset.available = 'true';
      var keys = STATUS_ORDER.filter(function (k) { return k in body; });
      Object.keys(body).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); });
      keys.forEach(function (k) {
        var v = body[k];
        if (v !== null && typeof v === 'object') return;   // only scalar fields
        if (v === false) return;                           // a flag that is off (e.g. draining) is not news
        var li = h('li', 'chip');
        li.dataset.key = k;
        var text = k === 'uptime_s' ? fmtUptime(v) : v === true ? 'yes' : str(v);
        if (v === true) li.dataset.health = 'flag-on';
        if (k === 'version') text = /^v/i.test(text) ? text : 'v' + text;
        var label = STATUS_LABEL[k] || k.replace(/_/g, ' ');
        if (k !== 'version') li.appendChild(h('span', 'chip-key', label));
        li.appendChild(h('span', 'chip-val', text));
        if (v === 'up' || v === 'down' || v === 'disabled') li.dataset.health = v;
        frag.appendChild(li);
      });
    }
    el.statusStrip.replaceChildren(frag);
  }

  function pollStatus() {
    if (!token || document.hidden) return;
    var gen = ++statusGen;
    fetchStatus(token, 4000).then(function (r) {
      if (gen !== statusGen) return;   // a newer poll is under way, or polling stopped
      renderStatus(r.status >= 200 && r.status < 300 ? r.body : null);
    });
  }

  function startStatusPoll() {
    if (statusTimer) clearInterval(statusTimer);
    pollStatus();
    statusTimer = setInterval(pollStatus, STATUS_POLL_MS);
  }

  function stopStatusPoll() {
    if (statusTimer) clearInterval(statusTimer);
    statusTimer = 0;
    statusGen++;
    renderStatus(null);
  }

  // ---------------------------------------------------------------- debug hook
  function copy(v) { return v === null || v === undefined ? v : JSON.parse(JSON.stringify(v)); }

  function snapshotQuotes() {
    var out = {};
    Object.keys(quotes).forEach(function (s) {
      var q = quotes[s];
      out[s] = { symbol: q.symbol, bid: q.bid, ask: q.ask, spread: q.spread, timestamp: q.timestamp };
    });
    return out;
  }

  var hook = Object.freeze({
    state: function () {
      return {
        connection: conn.state,
        attempt: conn.attempt,
        rtt: conn.rtt,
        quotes: snapshotQuotes(),
        positions: copy(positions),
        orders: copy(orders),
        account: copy(account),
        logsCount: Math.min(LOG_CAP, logs.length + logsIncoming.length),
        logsPending: logsPaused.length,
        lastLogSeq: lastLogSeq,
        signalsCount: signals.length,
        lastSignalSeq: lastSignalSeq,
        session: conn.session,
        resumed: conn.resumed,
        renders: renderCount,
        quoteEvents: quoteCount
      };
    }
  });
  try {
    Object.defineProperty(window, '__dashboard', { value: hook, writable: false, configurable: false, enumerable: false });
  } catch (e) { /* already defined */ }

  // ---------------------------------------------------------------- boot
  function boot() {
    el.conn = $('conn');
    el.connState = $('conn-state');
    el.connDetail = $('conn-detail');
    el.rtt = $('rtt');
    el.reconnectBtn = $('reconnect-btn');
    el.statusStrip = $('status-strip');
    el.tokenInfo = $('token-info');
    el.logout = $('logout-btn');
    el.auth = $('auth');
    el.main = $('main');
    el.authForm = $('auth-form');
    el.authError = $('auth-error');
    el.tokenInput = $('token-input');
    el.quotesBody = $('quotes').tBodies[0];
    el.quotesEmpty = $('quotes-empty');
    el.quotesMeta = $('quotes-meta');
    el.positionsBody = $('positions').tBodies[0];
    el.positionsTotal = $('positions-total');
    el.positionsEmpty = $('positions-empty');
    el.positionsMeta = $('positions-meta');
    el.positionsPl = $('positions-pl');
    el.ordersBody = $('orders').tBodies[0];
    el.ordersEmpty = $('orders-empty');
    el.ordersMeta = $('orders-meta');
    var accEl = $('account');
    el.acc = {
      balance: accEl.querySelector('.balance'),
      equity: accEl.querySelector('.equity'),
      margin: accEl.querySelector('.margin'),
      freeMargin: accEl.querySelector('.free-margin'),
      marginLevel: accEl.querySelector('.margin-level'),
      profit: accEl.querySelector('.profit')
    };
    el.accCurrency = $('account-currency');
    el.logs = $('logs');
    el.logsPanel = el.logs.closest('.panel');
    el.logsEmpty = $('logs-empty');
    el.logLevel = $('log-level');
    el.logsPause = $('logs-pause');
    el.logsNew = $('logs-new');
    el.signals = $('signals');
    el.signalsEmpty = $('signals-empty');
    el.signalsMeta = $('signals-meta');
    el.toasts = $('toasts');

    el.authForm.addEventListener('submit', onAuthSubmit);
    el.logout.addEventListener('click', logout);
    el.reconnectBtn.addEventListener('click', reconnectNow);
    el.logLevel.addEventListener('change', onFilterChange);
    el.logsPause.addEventListener('click', togglePause);
    el.logLevel.value = 'all';

    // Countdown of the reconnect strip.
    setInterval(function () {
      if (conn.state === 'reconnecting') { connDirty = true; schedule(); }
    }, 200);

    // A new `#token=` in the URL: renew in place when it is the same user
    // and account, else start over with it.
    window.addEventListener('hashchange', function () {
      var t = tokenFromFragment();
      if (!t || t === token || refreshInPlace(t)) return;
      token = t;
      storageSet(t);
      renderTokenInfo();
      conn.session = null;
      conn.attempt = 0;
      hideAuth();
      connect();
    });
    window.addEventListener('online', function () {
      if (token && conn.state === 'reconnecting') { connect(); }
    });
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && token) pollStatus();
    });

    var fromHash = tokenFromFragment();
    token = fromHash || cleanToken(storageGet()) || null;
    if (fromHash) storageSet(fromHash);
    renderTokenInfo();
    if (token) {
      connect();
    } else {
      setConn('disconnected', 'No token');
      showAuth('');
    }
    renderAccount();
    schedule();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
