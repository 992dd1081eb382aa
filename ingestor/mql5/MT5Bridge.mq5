//+------------------------------------------------------------------+
//| MT5Bridge.mq5                                                    |
//|                                                                  |
//| Streams a terminal's quotes (every tick), positions, pending     |
//| orders, account, logs, signals and trade errors to               |
//| `ingestor bridge`, as ingestor/mql5/PROTOCOL.md describes        |
//| (protocol 2: NDJSON over TCP or TLS, `hello` with a key first).  |
//|                                                                  |
//| Why an EA dials out: MQL5 can open outgoing sockets but cannot   |
//| listen, so the ingestor is the server and this EA the client.    |
//|                                                                  |
//| Never blocking: everything runs from the timer; one timer pass   |
//| is sent with one SocketSend under a send timeout; a failed send  |
//| drops the connection, which comes back with backoff (1 s to      |
//| 30 s, jitter) and a fresh hello and full snapshots.              |
//|                                                                  |
//| Setup:                                                           |
//|  1. Start `ingestor bridge` with BRIDGE_KEY or BRIDGE_KEYS_FILE. |
//|  2. Tools > Options > Expert Advisors: tick "Allow WebRequest    |
//|     for listed URL" and add the ingestor host; MetaTrader        |
//|     applies that list to sockets too.                            |
//|  3. Attach this EA to one chart per terminal, with InpKey (and   |
//|     InpTls when the ingestor serves TLS).                        |
//+------------------------------------------------------------------+
#property copyright "MT5 Trading Dashboard"
#property version   "2.00"

input string InpHost          = "127.0.0.1"; // Ingestor host (the TLS certificate's name when InpTls)
input ushort InpPort          = 5555;        // Ingestor port
input string InpKey           = "";          // Terminal key (BRIDGE_KEY or this terminal's line of BRIDGE_KEYS_FILE)
input bool   InpTls           = false;       // TLS (the ingestor has BRIDGE_TLS_CERT_FILE)
input string InpAccountLabel  = "";          // Account label ("": the key's account or the ingestor's default)
input string InpSymbols       = "";          // Symbols, comma-separated ("": Market Watch)
input int    InpTimerMs       = 100;         // Timer pass: ticks are collected and sent this often
input int    InpPositionsMs   = 1000;        // Positions snapshot interval
input int    InpOrdersMs      = 2000;        // Pending orders snapshot interval
input int    InpAccountMs     = 1000;        // Account update interval
input int    InpHeartbeatMs   = 5000;        // Heartbeat interval (three missed: terminal down)
input int    InpConnectMs     = 1000;        // Connect timeout, ms
input int    InpSendTimeoutMs = 2000;        // Send timeout, ms: a send that takes longer drops the connection
input bool   InpOutbox        = true;        // Forward logs/signals/errors of other programs (MT5BridgeOutbox.mqh)

#define BRIDGE_VERSION   "2.0"
#define BRIDGE_PROTOCOL  2
#define BRIDGE_LOCK      "MT5Bridge.lock"
#define BACKOFF_MIN_MS   1000
#define BACKOFF_MAX_MS   30000
#define TICKS_PER_PASS   1000
#define OUTBOX_MAX_BYTES 1048576

#include "MT5BridgeOutbox.mqh"

int      g_socket = INVALID_HANDLE;
bool     g_locked = false;
long     g_login = 0;            // login the connection's hello named
ulong    g_nextAttempt = 0;      // GetTickCount64 of the next connect attempt
int      g_backoffMs = BACKOFF_MIN_MS;
ulong    g_lastPositions = 0, g_lastOrders = 0, g_lastAccount = 0, g_lastHeartbeat = 0;
bool     g_tradeDirty = false;   // a trade happened: snapshots now
string   g_batch = "";           // lines of this timer pass
string   g_symbols[];
long     g_lastMsc[];            // time_msc of the last tick sent, per symbol (0: none yet)
int      g_sentAtLast[];         // ticks already sent that carry exactly g_lastMsc
double   g_lastBid[], g_lastAsk[];
long     g_outboxOffset = -1;    // -1: start at the file's current end
string   g_rx = "";              // bytes read from the ingestor, up to a newline
// Commission per position identifier, refreshed when a deal arrives.
long     g_commissionId[];
double   g_commission[];

//+------------------------------------------------------------------+
int OnInit()
  {
   if(MQLInfoInteger(MQL_TESTER) || MQLInfoInteger(MQL_OPTIMIZATION))
     {
      Print("MT5Bridge: does nothing in the Strategy Tester (it would publish history as live data)");
      return(INIT_FAILED);
     }
   if(StringLen(InpKey) < 16)
     {
      Print("MT5Bridge: InpKey must be the ingestor's key (at least 16 characters)");
      return(INIT_PARAMETERS_INCORRECT);
     }
   // One bridge per terminal: the first EA to set the lock from 0 owns it.
   if(!GlobalVariableCheck(BRIDGE_LOCK))
      GlobalVariableTemp(BRIDGE_LOCK);
   if(!GlobalVariableSetOnCondition(BRIDGE_LOCK, (double)ChartID(), 0.0))
     {
      Print("MT5Bridge: another MT5Bridge already runs in this terminal (chart ",
            DoubleToString(GlobalVariableGet(BRIDGE_LOCK), 0), "); remove it first");
      return(INIT_FAILED);
     }
   g_locked = true;
   LoadSymbols();
   if(ArraySize(g_symbols) == 0)
     {
      Print("MT5Bridge: no symbols to watch");
      return(INIT_PARAMETERS_INCORRECT);
     }
   MathSrand((uint)GetTickCount());
   EventSetMillisecondTimer(MathMax(InpTimerMs, 20));
   return(INIT_SUCCEEDED);
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   if(IsConnected())
     {
      AddLog("INFO", "MT5Bridge stopped (deinit reason " + IntegerToString(reason) + ")", "mt5_bridge", "{}");
      Flush();
     }
   Disconnect("EA removed");
   if(g_locked)
      GlobalVariableSetOnCondition(BRIDGE_LOCK, 0.0, (double)ChartID());
  }

void OnTimer()
  {
   ulong now = GetTickCount64();
   long login = AccountInfoInteger(ACCOUNT_LOGIN);
   bool online = TerminalInfoInteger(TERMINAL_CONNECTED) && login != 0;
   // Another account logged in: its data must not go out under the old
   // hello. A new connection says who we are now.
   if(IsConnected() && login != g_login)
     {
      Disconnect("account changed");
      g_nextAttempt = 0;
     }
   if(!IsConnected())
     {
      if(!online || now < g_nextAttempt)
         return;
      if(!Connect())
        {
         Backoff();
         return;
        }
     }
   ReadAnswers();
   if(!IsConnected())
      return;
   // No snapshots while the broker link is down or nobody is logged in:
   // they would be empty or stale. Heartbeats keep the link alive.
   if(online)
     {
      CollectTicks();
      if(g_tradeDirty || now - g_lastPositions >= (ulong)InpPositionsMs)
        { AddPositions(); g_lastPositions = now; }
      if(g_tradeDirty || now - g_lastOrders >= (ulong)InpOrdersMs)
        { AddOrders(); g_lastOrders = now; }
      if(g_tradeDirty || now - g_lastAccount >= (ulong)InpAccountMs)
        { AddAccount(); g_lastAccount = now; }
      g_tradeDirty = false;
     }
   if(now - g_lastHeartbeat >= (ulong)InpHeartbeatMs)
     {
      Add("{\"type\":\"heartbeat\",\"gmt_offset_s\":" + IntegerToString(GmtOffsetS()) + "}");
      g_lastHeartbeat = now;
     }
   if(InpOutbox)
      ForwardOutbox();
   Flush();
  }

//+------------------------------------------------------------------+
//| Trades: log what happened, relay failures as errors, refresh the |
//| snapshots on the next pass.                                      |
//+------------------------------------------------------------------+
void OnTradeTransaction(const MqlTradeTransaction &trans,
                        const MqlTradeRequest &request,
                        const MqlTradeResult &result)
  {
   g_tradeDirty = true;
   if(!IsConnected())
      return;
   if(trans.type == TRADE_TRANSACTION_DEAL_ADD)
     {
      ForgetCommission((long)trans.position);
      string extra = "{\"deal\":" + IntegerToString((long)trans.deal) +
                     ",\"order\":" + IntegerToString((long)trans.order) +
                     ",\"position\":" + IntegerToString((long)trans.position) +
                     ",\"symbol\":\"" + JsonEscape(trans.symbol) + "\"}";
      AddLog("INFO", "Deal #" + IntegerToString((long)trans.deal) + " " + trans.symbol + " " +
             DealSide(trans.deal_type) + " " + DoubleToString(trans.volume, 2) + " at " +
             DoubleToString(trans.price, SymbolDigits(trans.symbol)), "mt5_communication", extra);
      return;
     }
   if(trans.type != TRADE_TRANSACTION_REQUEST)
      return;
   string what = request.symbol + " " + OrderSide(request.type) + " " + DoubleToString(request.volume, 2);
   if(result.retcode == TRADE_RETCODE_DONE || result.retcode == TRADE_RETCODE_PLACED ||
      result.retcode == TRADE_RETCODE_DONE_PARTIAL)
     {
      string extra = "{\"ticket\":" + IntegerToString((long)result.order) +
                     ",\"symbol\":\"" + JsonEscape(request.symbol) + "\"" +
                     ",\"retcode\":" + IntegerToString((long)result.retcode) + "}";
      AddLog("INFO", "Order placed successfully: " + what, "mt5_communication", extra);
      return;
     }
   Add("{\"type\":\"error\",\"error\":\"Failed to place order\"" +
       ",\"details\":\"" + JsonEscape(what + ": " + result.comment) + "\"" +
       ",\"code\":\"" + RetcodeName(result.retcode) + "\"" +
       ",\"time\":" + IntegerToString((long)TimeTradeServer() * 1000) + "}");
  }

//+------------------------------------------------------------------+
//| Connection                                                       |
//+------------------------------------------------------------------+
bool IsConnected()
  {
   return(g_socket != INVALID_HANDLE && SocketIsConnected(g_socket));
  }

// Trade server time minus UTC, rounded to a quarter hour.
long GmtOffsetS()
  {
   long raw = (long)(TimeTradeServer() - TimeGMT());
   return((long)MathRound(raw / 900.0) * 900);
  }

bool Connect()
  {
   g_socket = SocketCreate();
   if(g_socket == INVALID_HANDLE)
     {
      Print("MT5Bridge: SocketCreate failed, error ", GetLastError());
      return(false);
     }
   // The send timeout bounds every SocketSend: a stalled ingestor costs at
   // most this, then the connection is dropped.
   SocketTimeouts(g_socket, (uint)InpSendTimeoutMs, 1000);
   if(!SocketConnect(g_socket, InpHost, InpPort, (uint)InpConnectMs))
     {
      int err = GetLastError();
      // 4014: the address is not in the allowed list (see Setup above).
      Print("MT5Bridge: cannot connect to ", InpHost, ":", InpPort, ", error ", err,
            err == 4014 ? " (add the host to Tools > Options > Expert Advisors)" : "");
      Disconnect("connect failed");
      return(false);
     }
   if(InpTls && !SocketTlsHandshake(g_socket, InpHost))
     {
      Print("MT5Bridge: TLS handshake with ", InpHost, " failed, error ", GetLastError(),
            " (is the ingestor's CA trusted by Windows? see the ingestor README)");
      Disconnect("TLS failed");
      return(false);
     }
   g_login = AccountInfoInteger(ACCOUNT_LOGIN);
   g_rx = "";
   Add("{\"type\":\"hello\",\"protocol\":" + IntegerToString(BRIDGE_PROTOCOL) +
       ",\"key\":\"" + JsonEscape(InpKey) + "\"" +
       ",\"account\":\"" + JsonEscape(InpAccountLabel) + "\"" +
       ",\"login\":" + IntegerToString(g_login) +
       ",\"server\":\"" + JsonEscape(AccountInfoString(ACCOUNT_SERVER)) + "\"" +
       ",\"company\":\"" + JsonEscape(AccountInfoString(ACCOUNT_COMPANY)) + "\"" +
       ",\"version\":\"" + BRIDGE_VERSION + "\"" +
       ",\"gmt_offset_s\":" + IntegerToString(GmtOffsetS()) +
       ",\"heartbeat_ms\":" + IntegerToString(InpHeartbeatMs) + "}");
   AddLog("INFO", "MT5Bridge connected, watching " + IntegerToString(ArraySize(g_symbols)) + " symbols",
          "mt5_bridge", "{\"symbols\":" + IntegerToString(ArraySize(g_symbols)) + "}");
   // Whoever subscribes next finds every value there: the latest tick per
   // symbol (not the ticks missed while disconnected) and full snapshots.
   ArrayInitialize(g_lastMsc, 0);
   ArrayInitialize(g_sentAtLast, 0);
   g_tradeDirty = true;
   g_lastHeartbeat = GetTickCount64();
   if(!Flush())
      return(false);
   Print("MT5Bridge: connected to ", InpHost, ":", InpPort, InpTls ? " (TLS)" : "");
   return(true);
  }

void Disconnect(const string why)
  {
   g_batch = "";
   if(g_socket == INVALID_HANDLE)
      return;
   SocketClose(g_socket);
   g_socket = INVALID_HANDLE;
   Print("MT5Bridge: disconnected (", why, ")");
  }

// 1 s doubling to 30 s, with +-25 % jitter so that many terminals do not
// reconnect in step after an ingestor restart.
void Backoff()
  {
   int jitter = (int)(g_backoffMs * (MathRand() / 32767.0 - 0.5) / 2.0);
   g_nextAttempt = GetTickCount64() + (ulong)MathMax(g_backoffMs + jitter, 100);
   g_backoffMs = MathMin(g_backoffMs * 2, BACKOFF_MAX_MS);
  }

void Add(const string line)
  {
   g_batch += line + "\n";
  }

// Sends the pass's lines with one SocketSend; on failure (the send timeout
// included) drops the connection and schedules a reconnect.
bool Flush()
  {
   if(StringLen(g_batch) == 0)
      return(IsConnected());
   if(g_socket == INVALID_HANDLE)
     {
      g_batch = "";
      return(false);
     }
   uchar buf[];
   // StringToCharArray counts the terminating NUL; it must not be sent.
   int len = StringToCharArray(g_batch, buf, 0, WHOLE_ARRAY, CP_UTF8) - 1;
   g_batch = "";
   if(len <= 0)
      return(true);
   int sent = InpTls ? SocketTlsSend(g_socket, buf, (uint)len) : SocketSend(g_socket, buf, (uint)len);
   if(sent != len)
     {
      Disconnect("send failed or timed out, error " + IntegerToString(GetLastError()));
      Backoff();
      return(false);
     }
   g_backoffMs = BACKOFF_MIN_MS;
   return(true);
  }

// The ingestor answers `welcome` or `refused` (then closes). Reads only
// what is there: SocketIsReadable may answer 1 speculatively on an empty
// buffer, so the plain read waits 1 ms at most (a timeout of 0 would mean
// the 120 s default).
void ReadAnswers()
  {
   uint avail = SocketIsReadable(g_socket);
   if(avail == 0)
      return;
   uchar buf[];
   uint want = avail < 65536 ? avail : 65536;
   int n = InpTls ? SocketTlsReadAvailable(g_socket, buf, want)
                  : SocketRead(g_socket, buf, want, 1);
   if(n <= 0)
      return;
   g_rx += CharArrayToString(buf, 0, n, CP_UTF8);
   int nl;
   while((nl = StringFind(g_rx, "\n")) >= 0)
     {
      string line = StringSubstr(g_rx, 0, nl);
      g_rx = StringSubstr(g_rx, nl + 1);
      if(StringFind(line, "\"type\":\"refused\"") < 0)
         continue;
      Print("MT5Bridge: the ingestor refused this terminal: ", line);
      if(StringFind(line, "KEY") >= 0 || StringFind(line, "ACCOUNT_NOT_ALLOWED") >= 0 ||
         StringFind(line, "UNSUPPORTED_PROTOCOL") >= 0)
        {
         // Retrying will not help: check InpKey / InpAccountLabel.
         Alert("MT5Bridge refused by the ingestor: ", line);
         g_backoffMs = BACKOFF_MAX_MS;
        }
      Disconnect("refused");
      Backoff();
      return;
     }
  }

//+------------------------------------------------------------------+
//| Quotes: every tick since the last one sent                       |
//+------------------------------------------------------------------+
void LoadSymbols()
  {
   ArrayResize(g_symbols, 0);
   if(StringLen(InpSymbols) > 0)
     {
      string parts[];
      int n = StringSplit(InpSymbols, ',', parts);
      for(int i = 0; i < n; i++)
        {
         string s = parts[i];
         StringTrimLeft(s);
         StringTrimRight(s);
         if(StringLen(s) == 0)
            continue;
         if(!SymbolSelect(s, true))
           {
            Print("MT5Bridge: unknown symbol ", s);
            continue;
           }
         AddSymbol(s);
        }
     }
   else
     {
      int total = SymbolsTotal(true);
      for(int i = 0; i < total; i++)
         AddSymbol(SymbolName(i, true));
     }
   int n = ArraySize(g_symbols);
   ArrayResize(g_lastMsc, n);
   ArrayResize(g_sentAtLast, n);
   ArrayResize(g_lastBid, n);
   ArrayResize(g_lastAsk, n);
   ArrayInitialize(g_lastMsc, 0);
   ArrayInitialize(g_sentAtLast, 0);
   ArrayInitialize(g_lastBid, 0.0);
   ArrayInitialize(g_lastAsk, 0.0);
  }

void AddSymbol(const string s)
  {
   int n = ArraySize(g_symbols);
   ArrayResize(g_symbols, n + 1);
   g_symbols[n] = s;
  }

void AddQuote(const int i, const MqlTick &t)
  {
   string s = g_symbols[i];
   int digits = SymbolDigits(s);
   Add("{\"type\":\"quote\",\"symbol\":\"" + JsonEscape(s) + "\"" +
       ",\"bid\":" + DoubleToString(t.bid, digits) +
       ",\"ask\":" + DoubleToString(t.ask, digits) +
       ",\"point\":" + DoubleToString(SymbolInfoDouble(s, SYMBOL_POINT), digits) +
       ",\"digits\":" + IntegerToString(digits) +
       ",\"time\":" + IntegerToString(t.time_msc) + "}");
   g_lastBid[i] = t.bid;
   g_lastAsk[i] = t.ask;
  }

// COPY_TICKS_INFO from the last time_msc sent: ticks at that very
// millisecond come back again, so the ones already sent are skipped by
// count, and a tick whose bid and ask did not move is not sent. Right
// after a (re)connect only the latest tick goes out.
void CollectTicks()
  {
   for(int i = 0; i < ArraySize(g_symbols); i++)
     {
      string s = g_symbols[i];
      if(g_lastMsc[i] == 0)
        {
         MqlTick last;
         if(SymbolInfoTick(s, last) && last.bid > 0.0 && last.ask > 0.0)
           {
            AddQuote(i, last);
            g_lastMsc[i] = last.time_msc;
            g_sentAtLast[i] = 1;
           }
         continue;
        }
      MqlTick ticks[];
      int n = CopyTicks(s, ticks, COPY_TICKS_INFO, (ulong)g_lastMsc[i], TICKS_PER_PASS);
      if(n <= 0)
         continue;
      int seenAtLast = 0;
      for(int k = 0; k < n; k++)
        {
         if(ticks[k].time_msc < g_lastMsc[i])
            continue;
         if(ticks[k].time_msc == g_lastMsc[i])
           {
            seenAtLast++;
            if(seenAtLast <= g_sentAtLast[i])
               continue;
           }
         else
           {
            g_lastMsc[i] = ticks[k].time_msc;
            g_sentAtLast[i] = 0;
            seenAtLast = 1;
           }
         g_sentAtLast[i]++;
         if(ticks[k].bid <= 0.0 || ticks[k].ask <= 0.0)
            continue;
         if(ticks[k].bid == g_lastBid[i] && ticks[k].ask == g_lastAsk[i])
            continue;
         AddQuote(i, ticks[k]);
        }
     }
  }

//+------------------------------------------------------------------+
//| Snapshots                                                        |
//+------------------------------------------------------------------+
void AddPositions()
  {
   string items = "";
   int total = PositionsTotal();
   for(int i = 0; i < total; i++)
     {
      ulong ticket = PositionGetTicket(i);
      if(ticket == 0)
         continue;
      string s = PositionGetString(POSITION_SYMBOL);
      int digits = SymbolDigits(s);
      // Read everything before the commission: the history query it may
      // run does not keep the position selected.
      string type = EnumToString((ENUM_POSITION_TYPE)PositionGetInteger(POSITION_TYPE));
      long id = PositionGetInteger(POSITION_IDENTIFIER);
      string item = "{\"ticket\":" + IntegerToString((long)ticket) +
                    ",\"symbol\":\"" + JsonEscape(s) + "\"" +
                    ",\"type\":\"" + type + "\"" +
                    ",\"volume\":" + DoubleToString(PositionGetDouble(POSITION_VOLUME), 2) +
                    ",\"price_open\":" + DoubleToString(PositionGetDouble(POSITION_PRICE_OPEN), digits) +
                    ",\"price_current\":" + DoubleToString(PositionGetDouble(POSITION_PRICE_CURRENT), digits) +
                    ",\"sl\":" + DoubleToString(PositionGetDouble(POSITION_SL), digits) +
                    ",\"tp\":" + DoubleToString(PositionGetDouble(POSITION_TP), digits) +
                    ",\"profit\":" + DoubleToString(PositionGetDouble(POSITION_PROFIT), 2) +
                    ",\"swap\":" + DoubleToString(PositionGetDouble(POSITION_SWAP), 2) +
                    ",\"time\":" + IntegerToString(PositionGetInteger(POSITION_TIME_MSC)) +
                    ",\"comment\":\"" + JsonEscape(PositionGetString(POSITION_COMMENT)) + "\"";
      item += ",\"commission\":" + DoubleToString(Commission(id), 2) + "}";
      items += (StringLen(items) > 0 ? "," : "") + item;
     }
   Add("{\"type\":\"positions\",\"items\":[" + items + "]}");
  }

// Commission is charged on deals, not kept on the position: the sum of
// DEAL_COMMISSION over the deals of the position's identifier, cached until
// a new deal of that position arrives (OnTradeTransaction).
double Commission(const long id)
  {
   for(int i = 0; i < ArraySize(g_commissionId); i++)
      if(g_commissionId[i] == id)
         return(g_commission[i]);
   double sum = 0.0;
   if(HistorySelectByPosition(id))
     {
      int deals = HistoryDealsTotal();
      for(int i = 0; i < deals; i++)
        {
         ulong deal = HistoryDealGetTicket(i);
         if(deal > 0)
            sum += HistoryDealGetDouble(deal, DEAL_COMMISSION);
        }
     }
   int n = ArraySize(g_commissionId);
   if(n >= 1000)
     {
      // Closed positions accumulate; start over rather than grow.
      ArrayResize(g_commissionId, 0);
      ArrayResize(g_commission, 0);
      n = 0;
     }
   ArrayResize(g_commissionId, n + 1);
   ArrayResize(g_commission, n + 1);
   g_commissionId[n] = id;
   g_commission[n] = sum;
   return(sum);
  }

void ForgetCommission(const long id)
  {
   for(int i = 0; i < ArraySize(g_commissionId); i++)
      if(g_commissionId[i] == id)
         g_commissionId[i] = -1;
  }

void AddOrders()
  {
   string items = "";
   int total = OrdersTotal();
   for(int i = 0; i < total; i++)
     {
      ulong ticket = OrderGetTicket(i);
      if(ticket == 0)
         continue;
      string s = OrderGetString(ORDER_SYMBOL);
      int digits = SymbolDigits(s);
      string item = "{\"ticket\":" + IntegerToString((long)ticket) +
                    ",\"symbol\":\"" + JsonEscape(s) + "\"" +
                    ",\"type\":\"" + EnumToString((ENUM_ORDER_TYPE)OrderGetInteger(ORDER_TYPE)) + "\"" +
                    ",\"volume\":" + DoubleToString(OrderGetDouble(ORDER_VOLUME_CURRENT), 2) +
                    ",\"price_open\":" + DoubleToString(OrderGetDouble(ORDER_PRICE_OPEN), digits) +
                    ",\"sl\":" + DoubleToString(OrderGetDouble(ORDER_SL), digits) +
                    ",\"tp\":" + DoubleToString(OrderGetDouble(ORDER_TP), digits) +
                    ",\"time_setup\":" + IntegerToString(OrderGetInteger(ORDER_TIME_SETUP_MSC)) +
                    ",\"state\":\"" + EnumToString((ENUM_ORDER_STATE)OrderGetInteger(ORDER_STATE)) + "\"" +
                    ",\"comment\":\"" + JsonEscape(OrderGetString(ORDER_COMMENT)) + "\"}";
      items += (StringLen(items) > 0 ? "," : "") + item;
     }
   Add("{\"type\":\"orders\",\"items\":[" + items + "]}");
  }

// margin_level is 0 when no margin is used (MT5 reports it so).
void AddAccount()
  {
   Add("{\"type\":\"account\"" +
       ",\"balance\":" + DoubleToString(AccountInfoDouble(ACCOUNT_BALANCE), 2) +
       ",\"equity\":" + DoubleToString(AccountInfoDouble(ACCOUNT_EQUITY), 2) +
       ",\"margin\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN), 2) +
       ",\"free_margin\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN_FREE), 2) +
       ",\"margin_level\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN_LEVEL), 2) +
       ",\"profit\":" + DoubleToString(AccountInfoDouble(ACCOUNT_PROFIT), 2) +
       ",\"currency\":\"" + JsonEscape(AccountInfoString(ACCOUNT_CURRENCY)) + "\"}");
  }

//+------------------------------------------------------------------+
//| Logs and the outbox                                              |
//+------------------------------------------------------------------+
// `extra` must already be a JSON object. Stamped with trade-server time;
// the ingestor converts it to UTC.
void AddLog(const string level, const string message, const string module, const string extra)
  {
   Add("{\"type\":\"log\",\"level\":\"" + level + "\"" +
       ",\"message\":\"" + JsonEscape(message) + "\"" +
       ",\"module\":\"" + JsonEscape(module) + "\"" +
       ",\"extra\":" + extra +
       ",\"time\":" + IntegerToString((long)TimeTradeServer() * 1000) + "}");
  }

// Forwards complete lines that other programs of this terminal appended to
// this login's outbox since the last pass. Each goes out wrapped as a JSON
// string ({"type":"outbox","line":"..."}): whatever it holds, it can never
// become a hello or data; the ingestor accepts log, signal and error only.
void ForwardOutbox()
  {
   string file = BridgeOutboxFile(g_login);
   int h = FileOpen(file, FILE_READ | FILE_BIN | FILE_SHARE_READ | FILE_SHARE_WRITE);
   if(h == INVALID_HANDLE)
      return;
   long size = (long)FileSize(h);
   if(g_outboxOffset < 0 || g_outboxOffset > size)   // first run, or the file was truncated
      g_outboxOffset = (g_outboxOffset < 0) ? size : 0;
   if(size > g_outboxOffset)
     {
      uchar bytes[];
      FileSeek(h, g_outboxOffset, SEEK_SET);
      int n = (int)FileReadArray(h, bytes, 0, (int)MathMin(size - g_outboxOffset, OUTBOX_MAX_BYTES));
      int last = -1;
      for(int i = n - 1; i >= 0; i--)
         if(bytes[i] == '\n') { last = i; break; }
      if(last >= 0)
        {
         string text = CharArrayToString(bytes, 0, last + 1, CP_UTF8);
         string lines[];
         int count = StringSplit(text, '\n', lines);
         for(int i = 0; i < count; i++)
           {
            string l = lines[i];
            StringTrimLeft(l);
            StringTrimRight(l);
            if(StringLen(l) > 0)
               Add("{\"type\":\"outbox\",\"line\":\"" + JsonEscape(l) + "\"}");
           }
         g_outboxOffset += last + 1;
        }
      else if(n >= OUTBOX_MAX_BYTES)
         g_outboxOffset += n;   // a line longer than the limit: skip it
     }
   FileClose(h);
  }

//+------------------------------------------------------------------+
//| Helpers                                                          |
//+------------------------------------------------------------------+
int SymbolDigits(const string symbol)
  {
   return((int)SymbolInfoInteger(symbol, SYMBOL_DIGITS));
  }

string DealSide(const ENUM_DEAL_TYPE t)
  {
   if(t == DEAL_TYPE_BUY)  return("BUY");
   if(t == DEAL_TYPE_SELL) return("SELL");
   return(EnumToString(t));
  }

string OrderSide(const ENUM_ORDER_TYPE t)
  {
   string s = EnumToString(t);
   StringReplace(s, "ORDER_TYPE_", "");
   return(s);
  }

// The trade server's return codes under the names dashboards know
// (contract: terminal errors keep MT5's meaning).
string RetcodeName(const uint code)
  {
   switch(code)
     {
      case TRADE_RETCODE_REQUOTE:          return("REQUOTE");
      case TRADE_RETCODE_REJECT:           return("REQUEST_REJECTED");
      case TRADE_RETCODE_CANCEL:           return("REQUEST_CANCELED");
      case TRADE_RETCODE_INVALID:          return("INVALID_REQUEST");
      case TRADE_RETCODE_INVALID_VOLUME:   return("INVALID_VOLUME");
      case TRADE_RETCODE_INVALID_PRICE:    return("INVALID_PRICE");
      case TRADE_RETCODE_INVALID_STOPS:    return("INVALID_STOPS");
      case TRADE_RETCODE_TRADE_DISABLED:   return("TRADE_DISABLED");
      case TRADE_RETCODE_MARKET_CLOSED:    return("MARKET_CLOSED");
      case TRADE_RETCODE_NO_MONEY:         return("INSUFFICIENT_MARGIN");
      case TRADE_RETCODE_PRICE_CHANGED:    return("PRICE_CHANGED");
      case TRADE_RETCODE_PRICE_OFF:        return("NO_QUOTES");
      case TRADE_RETCODE_TOO_MANY_REQUESTS:return("TOO_MANY_REQUESTS");
      case TRADE_RETCODE_CLIENT_DISABLES_AT: return("AUTOTRADING_DISABLED");
      case TRADE_RETCODE_CONNECTION:       return("NO_CONNECTION");
      case TRADE_RETCODE_LIMIT_ORDERS:     return("ORDER_LIMIT_REACHED");
      case TRADE_RETCODE_LIMIT_VOLUME:     return("VOLUME_LIMIT_REACHED");
     }
   return(IntegerToString((long)code));
  }

string JsonEscape(const string s)
  {
   return(BridgeOutboxEscape(s));
  }
//+------------------------------------------------------------------+
