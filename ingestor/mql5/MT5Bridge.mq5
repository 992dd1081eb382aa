//+------------------------------------------------------------------+
//| MT5Bridge.mq5                                                    |
//|                                                                  |
//| Streams a terminal's quotes, positions, pending orders, account, |
//| logs, signals and trade errors to the `ingestor bridge` process  |
//| over TCP, one JSON object per line (NDJSON).                     |
//|                                                                  |
//| Why an EA dials out: MQL5 can open outgoing sockets but cannot   |
//| listen, so the ingestor is the server and this EA the client.    |
//|                                                                  |
//| Setup:                                                           |
//|  1. Start `ingestor bridge` (default 127.0.0.1:5555).            |
//|  2. Tools > Options > Expert Advisors: tick "Allow WebRequest    |
//|     for listed URL" and add the ingestor host (127.0.0.1);       |
//|     MetaTrader applies that list to sockets too.                 |
//|  3. Attach this EA to any chart. It keeps reconnecting when the  |
//|     ingestor restarts.                                           |
//|                                                                  |
//| Other programs (strategies, indicators) can pass lines through   |
//| by appending NDJSON to the outbox file in the common data folder |
//| (see MT5BridgeOutbox.mqh); this EA forwards complete lines.      |
//|                                                                  |
//| Wire format (all times are epoch milliseconds):                  |
//|  {"type":"hello","account","login","server","company","version"} |
//|  {"type":"quote","symbol","bid","ask","point","digits","time"}   |
//|  {"type":"positions","items":[{ticket,symbol,type,volume,        |
//|     price_open,price_current,sl,tp,profit,swap,commission,time,  |
//|     comment}]}                                                   |
//|  {"type":"orders","items":[{ticket,symbol,type,volume,           |
//|     price_open,sl,tp,time_setup,state,comment}]}                 |
//|  {"type":"account","balance","equity","margin","free_margin",    |
//|     "margin_level","profit","currency"}                          |
//|  {"type":"log","level","message","module","extra"}               |
//|  {"type":"signal",...}   {"type":"error","error","details","code"}|
//|  {"type":"heartbeat"}                                            |
//+------------------------------------------------------------------+
#property copyright "MT5 Trading Dashboard"
#property version   "1.00"

input string InpHost            = "127.0.0.1";  // Ingestor host
input ushort InpPort            = 5555;         // Ingestor port
input string InpAccountLabel    = "";           // Account label (empty: the ingestor's --account)
input string InpSymbols         = "";           // Symbols, comma-separated (empty: Market Watch)
input int    InpQuotePollMs     = 100;          // How often other symbols are checked for ticks
input int    InpPositionsMs     = 1000;         // Positions snapshot interval
input int    InpOrdersMs        = 2000;         // Pending orders snapshot interval
input int    InpAccountMs       = 1000;         // Account update interval
input int    InpHeartbeatMs     = 5000;         // Heartbeat interval (detects dead sockets)
input int    InpReconnectMs     = 3000;         // Wait between connection attempts
input int    InpConnectTimeout  = 1000;         // Connect timeout, ms
input string InpOutboxFile      = "MT5Bridge\\outbox.ndjson"; // Passthrough file in Common\Files ("" = off)

#define BRIDGE_VERSION "1.0"

int      g_socket = INVALID_HANDLE;
ulong    g_lastAttempt = 0;
ulong    g_lastPositions = 0;
ulong    g_lastOrders = 0;
ulong    g_lastAccount = 0;
ulong    g_lastHeartbeat = 0;
bool     g_tradeDirty = false;   // a trade happened: send snapshots now
string   g_symbols[];
long     g_lastTickMsc[];
double   g_lastBid[];
double   g_lastAsk[];
long     g_outboxOffset = -1;    // -1: start at the file's current end

//+------------------------------------------------------------------+
int OnInit()
  {
   LoadSymbols();
   if(ArraySize(g_symbols) == 0)
     {
      Print("MT5Bridge: no symbols to watch");
      return(INIT_PARAMETERS_INCORRECT);
     }
   // The timer drives everything but the chart's own ticks, so quotes of
   // other symbols, snapshots and reconnects happen even on a quiet chart.
   EventSetMillisecondTimer(MathMax(InpQuotePollMs, 20));
   Connect();
   return(INIT_SUCCEEDED);
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   if(IsConnected())
      SendLog("INFO", "MT5Bridge stopped (deinit reason " + IntegerToString(reason) + ")", "mt5_bridge", "{}");
   Disconnect("EA removed");
  }

void OnTick()
  {
   PollQuotes();
  }

void OnTimer()
  {
   ulong now = GetTickCount64();
   if(!IsConnected())
     {
      if(now - g_lastAttempt >= (ulong)InpReconnectMs)
         Connect();
      if(!IsConnected())
         return;
     }
   PollQuotes();
   if(g_tradeDirty || now - g_lastPositions >= (ulong)InpPositionsMs)
     { SendPositions(); g_lastPositions = now; }
   if(g_tradeDirty || now - g_lastOrders >= (ulong)InpOrdersMs)
     { SendOrders(); g_lastOrders = now; }
   if(g_tradeDirty || now - g_lastAccount >= (ulong)InpAccountMs)
     { SendAccount(); g_lastAccount = now; }
   g_tradeDirty = false;
   if(now - g_lastHeartbeat >= (ulong)InpHeartbeatMs)
     { SendLine("{\"type\":\"heartbeat\"}"); g_lastHeartbeat = now; }
   ForwardOutbox();
  }

//+------------------------------------------------------------------+
//| Trades: log what happened, relay failures as errors, and send    |
//| fresh snapshots right away instead of waiting for the interval.  |
//+------------------------------------------------------------------+
void OnTradeTransaction(const MqlTradeTransaction &trans,
                        const MqlTradeRequest &request,
                        const MqlTradeResult &result)
  {
   g_tradeDirty = true;
   if(trans.type == TRADE_TRANSACTION_DEAL_ADD)
     {
      string extra = "{\"deal\":" + IntegerToString((long)trans.deal) +
                     ",\"order\":" + IntegerToString((long)trans.order) +
                     ",\"position\":" + IntegerToString((long)trans.position) +
                     ",\"symbol\":\"" + JsonEscape(trans.symbol) + "\"}";
      SendLog("INFO", "Deal #" + IntegerToString((long)trans.deal) + " " + trans.symbol + " " +
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
      bool placed = (request.action == TRADE_ACTION_DEAL || request.action == TRADE_ACTION_PENDING);
      SendLog("INFO", (placed ? "Order placed successfully: " + what
                              : "Trade request done (" + EnumToString(request.action) + "): " + request.symbol),
              "mt5_communication", extra);
      return;
     }
   string line = "{\"type\":\"error\",\"error\":\"Failed to place order\"" +
                 ",\"details\":\"" + JsonEscape(what + ": " + result.comment) + "\"" +
                 ",\"code\":\"" + RetcodeName(result.retcode) + "\"}";
   SendLine(line);
  }

//+------------------------------------------------------------------+
//| Connection                                                       |
//+------------------------------------------------------------------+
bool IsConnected()
  {
   return(g_socket != INVALID_HANDLE && SocketIsConnected(g_socket));
  }

void Connect()
  {
   g_lastAttempt = GetTickCount64();
   if(g_socket != INVALID_HANDLE)
      Disconnect("reconnecting");
   g_socket = SocketCreate();
   if(g_socket == INVALID_HANDLE)
     {
      Print("MT5Bridge: SocketCreate failed, error ", GetLastError());
      return;
     }
   if(!SocketConnect(g_socket, InpHost, InpPort, InpConnectTimeout))
     {
      int err = GetLastError();
      SocketClose(g_socket);
      g_socket = INVALID_HANDLE;
      // 4014: the address is not in the allowed list (see Setup above).
      Print("MT5Bridge: cannot connect to ", InpHost, ":", InpPort, ", error ", err,
            err == 4014 ? " (add the host to Tools > Options > Expert Advisors)" : "");
      return;
     }
   Print("MT5Bridge: connected to ", InpHost, ":", InpPort);
   string hello = "{\"type\":\"hello\"" +
                  ",\"account\":\"" + JsonEscape(InpAccountLabel) + "\"" +
                  ",\"login\":" + IntegerToString(AccountInfoInteger(ACCOUNT_LOGIN)) +
                  ",\"server\":\"" + JsonEscape(AccountInfoString(ACCOUNT_SERVER)) + "\"" +
                  ",\"company\":\"" + JsonEscape(AccountInfoString(ACCOUNT_COMPANY)) + "\"" +
                  ",\"version\":\"" + BRIDGE_VERSION + "\"}";
   if(!SendLine(hello))
      return;
   SendLog("INFO", "MT5Bridge connected, watching " + IntegerToString(ArraySize(g_symbols)) + " symbols",
           "mt5_bridge", "{\"symbols\":" + IntegerToString(ArraySize(g_symbols)) + "}");
   // Whoever subscribes next should find every value already there.
   ArrayInitialize(g_lastTickMsc, 0);
   PollQuotes();
   g_tradeDirty = true;
  }

void Disconnect(const string why)
  {
   if(g_socket == INVALID_HANDLE)
      return;
   SocketClose(g_socket);
   g_socket = INVALID_HANDLE;
   Print("MT5Bridge: disconnected (", why, ")");
  }

// Sends one NDJSON line; on failure drops the socket so the timer
// reconnects.
bool SendLine(const string line)
  {
   if(g_socket == INVALID_HANDLE)
      return(false);
   uchar buf[];
   // StringToCharArray counts the terminating NUL; it must not be sent.
   int len = StringToCharArray(line + "\n", buf, 0, WHOLE_ARRAY, CP_UTF8) - 1;
   if(len <= 0)
      return(false);
   if(SocketSend(g_socket, buf, (uint)len) != len)
     {
      Disconnect("send failed, error " + IntegerToString(GetLastError()));
      return(false);
     }
   return(true);
  }

//+------------------------------------------------------------------+
//| Quotes                                                           |
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
   ArrayResize(g_lastTickMsc, n);
   ArrayResize(g_lastBid, n);
   ArrayResize(g_lastAsk, n);
   ArrayInitialize(g_lastTickMsc, 0);
   ArrayInitialize(g_lastBid, 0.0);
   ArrayInitialize(g_lastAsk, 0.0);
  }

void AddSymbol(const string s)
  {
   int n = ArraySize(g_symbols);
   ArrayResize(g_symbols, n + 1);
   g_symbols[n] = s;
  }

// Sends a quote for every watched symbol whose bid or ask changed since
// the last one sent.
void PollQuotes()
  {
   if(!IsConnected())
      return;
   for(int i = 0; i < ArraySize(g_symbols); i++)
     {
      MqlTick tick;
      if(!SymbolInfoTick(g_symbols[i], tick) || tick.bid <= 0.0 || tick.ask <= 0.0)
         continue;
      if(tick.time_msc == g_lastTickMsc[i] && tick.bid == g_lastBid[i] && tick.ask == g_lastAsk[i])
         continue;
      if(tick.bid == g_lastBid[i] && tick.ask == g_lastAsk[i] && g_lastTickMsc[i] != 0)
        {
         g_lastTickMsc[i] = tick.time_msc;  // volume-only tick: nothing to show
         continue;
        }
      g_lastTickMsc[i] = tick.time_msc;
      g_lastBid[i] = tick.bid;
      g_lastAsk[i] = tick.ask;
      string s = g_symbols[i];
      int digits = SymbolDigits(s);
      string line = "{\"type\":\"quote\",\"symbol\":\"" + JsonEscape(s) + "\"" +
                    ",\"bid\":" + DoubleToString(tick.bid, digits) +
                    ",\"ask\":" + DoubleToString(tick.ask, digits) +
                    ",\"point\":" + DoubleToString(SymbolInfoDouble(s, SYMBOL_POINT), digits) +
                    ",\"digits\":" + IntegerToString(digits) +
                    ",\"time\":" + IntegerToString(tick.time_msc) + "}";
      if(!SendLine(line))
         return;
     }
  }

//+------------------------------------------------------------------+
//| Snapshots                                                        |
//+------------------------------------------------------------------+
void SendPositions()
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
      string item = "{\"ticket\":" + IntegerToString((long)ticket) +
                    ",\"symbol\":\"" + JsonEscape(s) + "\"" +
                    ",\"type\":\"" + EnumToString((ENUM_POSITION_TYPE)PositionGetInteger(POSITION_TYPE)) + "\"" +
                    ",\"volume\":" + DoubleToString(PositionGetDouble(POSITION_VOLUME), 2) +
                    ",\"price_open\":" + DoubleToString(PositionGetDouble(POSITION_PRICE_OPEN), digits) +
                    ",\"price_current\":" + DoubleToString(PositionGetDouble(POSITION_PRICE_CURRENT), digits) +
                    ",\"sl\":" + DoubleToString(PositionGetDouble(POSITION_SL), digits) +
                    ",\"tp\":" + DoubleToString(PositionGetDouble(POSITION_TP), digits) +
                    ",\"profit\":" + DoubleToString(PositionGetDouble(POSITION_PROFIT), 2) +
                    ",\"swap\":" + DoubleToString(PositionGetDouble(POSITION_SWAP), 2) +
                    ",\"commission\":" + DoubleToString(PositionCommission(ticket), 2) +
                    ",\"time\":" + IntegerToString(PositionGetInteger(POSITION_TIME_MSC)) +
                    ",\"comment\":\"" + JsonEscape(PositionGetString(POSITION_COMMENT)) + "\"}";
      items += (StringLen(items) > 0 ? "," : "") + item;
     }
   SendLine("{\"type\":\"positions\",\"items\":[" + items + "]}");
  }

// Commission is charged on deals, not kept on the position: add up the
// position's deals. Re-selects the position afterwards because history
// calls do not keep the current selection.
double PositionCommission(const ulong ticket)
  {
   double sum = 0.0;
   if(HistorySelectByPosition(ticket))
     {
      int deals = HistoryDealsTotal();
      for(int i = 0; i < deals; i++)
        {
         ulong deal = HistoryDealGetTicket(i);
         if(deal > 0)
            sum += HistoryDealGetDouble(deal, DEAL_COMMISSION);
        }
     }
   PositionSelectByTicket(ticket);
   return(sum);
  }

void SendOrders()
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
   SendLine("{\"type\":\"orders\",\"items\":[" + items + "]}");
  }

void SendAccount()
  {
   string line = "{\"type\":\"account\"" +
                 ",\"balance\":" + DoubleToString(AccountInfoDouble(ACCOUNT_BALANCE), 2) +
                 ",\"equity\":" + DoubleToString(AccountInfoDouble(ACCOUNT_EQUITY), 2) +
                 ",\"margin\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN), 2) +
                 ",\"free_margin\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN_FREE), 2) +
                 ",\"margin_level\":" + DoubleToString(AccountInfoDouble(ACCOUNT_MARGIN_LEVEL), 2) +
                 ",\"profit\":" + DoubleToString(AccountInfoDouble(ACCOUNT_PROFIT), 2) +
                 ",\"currency\":\"" + JsonEscape(AccountInfoString(ACCOUNT_CURRENCY)) + "\"}";
   SendLine(line);
  }

//+------------------------------------------------------------------+
//| Logs and passthrough                                             |
//+------------------------------------------------------------------+
// `extra` must already be a JSON object. No time is sent: MQL5 has no
// millisecond wall clock, and the ingestor stamps the line on arrival.
void SendLog(const string level, const string message, const string module, const string extra)
  {
   string line = "{\"type\":\"log\",\"level\":\"" + level + "\"" +
                 ",\"message\":\"" + JsonEscape(message) + "\"" +
                 ",\"module\":\"" + JsonEscape(module) + "\"" +
                 ",\"extra\":" + extra + "}";
   SendLine(line);
  }

// Forwards complete lines appended to the outbox since the last call.
// Only bytes up to the last newline are consumed, so a line that another
// program is still writing is picked up whole next time.
void ForwardOutbox()
  {
   if(StringLen(InpOutboxFile) == 0)
      return;
   int h = FileOpen(InpOutboxFile, FILE_READ | FILE_BIN | FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_COMMON);
   if(h == INVALID_HANDLE)
      return;
   long size = (long)FileSize(h);
   if(g_outboxOffset < 0 || g_outboxOffset > size)   // first run, or the file was truncated
      g_outboxOffset = (g_outboxOffset < 0) ? size : 0;
   if(size > g_outboxOffset)
     {
      uchar bytes[];
      FileSeek(h, g_outboxOffset, SEEK_SET);
      int n = (int)FileReadArray(h, bytes, 0, (int)MathMin(size - g_outboxOffset, 1048576));
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
            if(StringLen(l) > 0 && StringGetCharacter(l, 0) == '{')
               SendLine(l);
           }
         g_outboxOffset += last + 1;
        }
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
   string out = "";
   int n = StringLen(s);
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"')       out += "\\\"";
      else if(c == '\\') out += "\\\\";
      else if(c == '\n') out += "\\n";
      else if(c == '\r') out += "\\r";
      else if(c == '\t') out += "\\t";
      else if(c < 0x20)  out += StringFormat("\\u%04x", c);
      else               out += ShortToString(c);
     }
   return(out);
  }
//+------------------------------------------------------------------+
