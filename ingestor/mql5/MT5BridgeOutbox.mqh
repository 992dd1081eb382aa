//+------------------------------------------------------------------+
//| MT5BridgeOutbox.mqh                                              |
//|                                                                  |
//| Lets any strategy or indicator of a terminal send logs, signals  |
//| and errors to the dashboard through that terminal's MT5Bridge,   |
//| without a socket of its own: lines are appended to a file of the |
//| logged-in account in the terminal's own data folder              |
//| (MQL5\Files\MT5Bridge\outbox-<login>.ndjson), and the bridge EA  |
//| forwards each complete line, wrapped so that it can only ever be |
//| a log, a signal or an error (see PROTOCOL.md, `outbox`).         |
//|                                                                  |
//| Nothing is written under the Strategy Tester or optimisation:    |
//| backtests must not reach live dashboards.                        |
//|                                                                  |
//|   #include "MT5BridgeOutbox.mqh"                                 |
//|   BridgeOutboxLog("INFO", "Entry skipped: spread too wide",      |
//|                   "my_strategy", "{\"symbol\":\"EURUSD\"}");     |
//|   BridgeOutboxSignal("EURUSD", "buy", 0.01, 50, 30,              |
//|                      "RSI_Strategy", 0.85, "");                  |
//+------------------------------------------------------------------+
#ifndef MT5_BRIDGE_OUTBOX_MQH
#define MT5_BRIDGE_OUTBOX_MQH

// One file per login: two accounts in one terminal (one after the other)
// never share lines, and other terminals have their own data folders.
string BridgeOutboxFile(const long login)
  {
   return("MT5Bridge\\outbox-" + IntegerToString(login) + ".ndjson");
  }

// Appends one line. The file is opened per call (and shared) so that
// several programs can write and the EA can read at the same time.
bool BridgeOutboxWrite(const string json_line)
  {
   if(MQLInfoInteger(MQL_TESTER) || MQLInfoInteger(MQL_OPTIMIZATION))
      return(false);
   long login = AccountInfoInteger(ACCOUNT_LOGIN);
   if(login == 0)
      return(false);
   int h = FileOpen(BridgeOutboxFile(login),
                    FILE_READ | FILE_WRITE | FILE_BIN | FILE_SHARE_READ | FILE_SHARE_WRITE);
   if(h == INVALID_HANDLE)
      return(false);
   uchar buf[];
   int len = StringToCharArray(json_line + "\n", buf, 0, WHOLE_ARRAY, CP_UTF8) - 1;
   bool ok = false;
   if(len > 0 && FileSeek(h, 0, SEEK_END))
      ok = (FileWriteArray(h, buf, 0, len) == (uint)len);
   FileClose(h);
   return(ok);
  }

// JSON string escaping: quotes, backslashes and control characters.
string BridgeOutboxEscape(const string s)
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

// Trade-server time in ms, as PROTOCOL.md wants terminal times.
string BridgeOutboxTime()
  {
   return(IntegerToString((long)TimeTradeServer() * 1000));
  }

// level: DEBUG, INFO, WARNING, ERROR; extra_json: a JSON object or "".
bool BridgeOutboxLog(const string level, const string message, const string module, const string extra_json)
  {
   return(BridgeOutboxWrite("{\"type\":\"log\",\"level\":\"" + BridgeOutboxEscape(level) + "\"" +
                            ",\"message\":\"" + BridgeOutboxEscape(message) + "\"" +
                            ",\"module\":\"" + BridgeOutboxEscape(module) + "\"" +
                            ",\"extra\":" + (StringLen(extra_json) > 0 ? extra_json : "{}") +
                            ",\"time\":" + BridgeOutboxTime() + "}"));
  }

// tp/sl in pips as in the dashboard spec; validators_json: a JSON array of
// {"name","type","approved","confidence","reason"} or "" (status pending).
bool BridgeOutboxSignal(const string symbol, const string side, const double volume,
                        const double tp, const double sl, const string source,
                        const double confidence, const string validators_json)
  {
   string uuid = "signal_" + IntegerToString(AccountInfoInteger(ACCOUNT_LOGIN)) + "_" +
                 IntegerToString((long)GetMicrosecondCount()) + "_" + IntegerToString(MathRand());
   return(BridgeOutboxWrite("{\"type\":\"signal\",\"uuid\":\"" + uuid + "\"" +
                            ",\"symbol\":\"" + BridgeOutboxEscape(symbol) + "\"" +
                            ",\"side\":\"" + BridgeOutboxEscape(side) + "\"" +
                            ",\"volume\":" + DoubleToString(volume, 2) +
                            ",\"tp\":" + DoubleToString(tp, 1) +
                            ",\"sl\":" + DoubleToString(sl, 1) +
                            ",\"source\":\"" + BridgeOutboxEscape(source) + "\"" +
                            ",\"confidence\":" + DoubleToString(confidence, 2) +
                            ",\"time\":" + BridgeOutboxTime() +
                            ",\"validators\":" + (StringLen(validators_json) > 0 ? validators_json : "[]") + "}"));
  }

// code: MT5's meaning, e.g. "INSUFFICIENT_MARGIN" (or the retcode number).
bool BridgeOutboxError(const string error, const string details, const string code)
  {
   return(BridgeOutboxWrite("{\"type\":\"error\",\"error\":\"" + BridgeOutboxEscape(error) + "\"" +
                            ",\"details\":\"" + BridgeOutboxEscape(details) + "\"" +
                            ",\"code\":\"" + BridgeOutboxEscape(code) + "\"" +
                            ",\"time\":" + BridgeOutboxTime() + "}"));
  }

#endif
