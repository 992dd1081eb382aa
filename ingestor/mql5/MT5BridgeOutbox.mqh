//+------------------------------------------------------------------+
//| MT5BridgeOutbox.mqh                                              |
//|                                                                  |
//| Lets any strategy or indicator in the same terminal send logs,   |
//| signals and errors to the dashboard through MT5Bridge, without a |
//| socket of its own: lines are appended to a file in the common    |
//| data folder, and the bridge EA forwards each complete line.      |
//|                                                                  |
//|   #include "MT5BridgeOutbox.mqh"                                 |
//|   BridgeOutboxLog("INFO", "Entry skipped: spread too wide",      |
//|                   "my_strategy", "{\"symbol\":\"EURUSD\"}");     |
//|   BridgeOutboxSignal("EURUSD", "buy", 0.01, 50, 30,              |
//|                      "RSI_Strategy", 0.85, "");                  |
//+------------------------------------------------------------------+
#ifndef MT5_BRIDGE_OUTBOX_MQH
#define MT5_BRIDGE_OUTBOX_MQH

#define BRIDGE_OUTBOX_FILE "MT5Bridge\\outbox.ndjson"

// Appends one line. The file is opened per call (and shared) so that
// several programs can write and the EA can read at the same time.
bool BridgeOutboxWrite(const string json_line)
  {
   int h = FileOpen(BRIDGE_OUTBOX_FILE,
                    FILE_READ | FILE_WRITE | FILE_BIN | FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_COMMON);
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

// level: DEBUG, INFO, WARNING, ERROR; extra_json: a JSON object or "".
bool BridgeOutboxLog(const string level, const string message, const string module, const string extra_json)
  {
   return(BridgeOutboxWrite("{\"type\":\"log\",\"level\":\"" + BridgeOutboxEscape(level) + "\"" +
                            ",\"message\":\"" + BridgeOutboxEscape(message) + "\"" +
                            ",\"module\":\"" + BridgeOutboxEscape(module) + "\"" +
                            ",\"extra\":" + (StringLen(extra_json) > 0 ? extra_json : "{}") + "}"));
  }

// tp/sl in pips as in the dashboard spec; validators_json: a JSON array of
// {"name","type","approved","confidence","reason"} or "" (status pending).
bool BridgeOutboxSignal(const string symbol, const string side, const double volume,
                        const double tp, const double sl, const string source,
                        const double confidence, const string validators_json)
  {
   string uuid = "signal_" + IntegerToString((long)TimeGMT()) + IntegerToString(MathRand() % 1000);
   return(BridgeOutboxWrite("{\"type\":\"signal\",\"uuid\":\"" + uuid + "\"" +
                            ",\"symbol\":\"" + BridgeOutboxEscape(symbol) + "\"" +
                            ",\"side\":\"" + BridgeOutboxEscape(side) + "\"" +
                            ",\"volume\":" + DoubleToString(volume, 2) +
                            ",\"tp\":" + DoubleToString(tp, 1) +
                            ",\"sl\":" + DoubleToString(sl, 1) +
                            ",\"source\":\"" + BridgeOutboxEscape(source) + "\"" +
                            ",\"confidence\":" + DoubleToString(confidence, 2) +
                            ",\"validators\":" + (StringLen(validators_json) > 0 ? validators_json : "[]") + "}"));
  }

// code: MT5's meaning, e.g. "INSUFFICIENT_MARGIN".
bool BridgeOutboxError(const string error, const string details, const string code)
  {
   return(BridgeOutboxWrite("{\"type\":\"error\",\"error\":\"" + BridgeOutboxEscape(error) + "\"" +
                            ",\"details\":\"" + BridgeOutboxEscape(details) + "\"" +
                            ",\"code\":\"" + BridgeOutboxEscape(code) + "\"}"));
  }

#endif
