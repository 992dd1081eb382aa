//! The payload shapes of `websocket-spec.pt.md`, field by field: names and
//! JSON types. A data event must carry exactly the spec's fields (plus `seq`
//! on logs and signals, which the contract adds); control events may carry
//! extra fields.

use serde_json::Value;

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    /// Any JSON number.
    Num,
    /// A JSON number without a fraction or exponent.
    Int,
    Bool,
    Obj,
    Arr,
    /// An RFC 3339 UTC timestamp string ending in `Z`.
    Time,
}

pub const QUOTE: &[(&str, Ty)] = &[
    ("symbol", Ty::Str),
    ("bid", Ty::Num),
    ("ask", Ty::Num),
    ("spread", Ty::Int),
    ("timestamp", Ty::Time),
];

pub const POSITION: &[(&str, Ty)] = &[
    ("ticket", Ty::Int),
    ("symbol", Ty::Str),
    ("type", Ty::Str),
    ("volume", Ty::Num),
    ("price_open", Ty::Num),
    ("price_current", Ty::Num),
    ("sl", Ty::Num),
    ("tp", Ty::Num),
    ("profit", Ty::Num),
    ("swap", Ty::Num),
    ("commission", Ty::Num),
    ("time", Ty::Time),
    ("comment", Ty::Str),
];

pub const ORDER: &[(&str, Ty)] = &[
    ("ticket", Ty::Int),
    ("symbol", Ty::Str),
    ("type", Ty::Str),
    ("volume", Ty::Num),
    ("price_open", Ty::Num),
    ("sl", Ty::Num),
    ("tp", Ty::Num),
    ("time_setup", Ty::Time),
    ("state", Ty::Str),
    ("comment", Ty::Str),
];

pub const LOG: &[(&str, Ty)] = &[
    ("timestamp", Ty::Time),
    ("level", Ty::Str),
    ("message", Ty::Str),
    ("module", Ty::Str),
    ("extra", Ty::Obj),
];

pub const SIGNAL: &[(&str, Ty)] = &[
    ("uuid", Ty::Str),
    ("symbol", Ty::Str),
    ("side", Ty::Str),
    ("volume", Ty::Num),
    ("tp", Ty::Num),
    ("sl", Ty::Num),
    ("source", Ty::Str),
    ("confidence", Ty::Num),
    ("timestamp", Ty::Time),
    ("validators", Ty::Arr),
    ("status", Ty::Str),
];

pub const VALIDATOR: &[(&str, Ty)] = &[
    ("name", Ty::Str),
    ("type", Ty::Str),
    ("approved", Ty::Bool),
    ("confidence", Ty::Num),
    ("reason", Ty::Str),
    ("timestamp", Ty::Time),
];

pub const ACCOUNT: &[(&str, Ty)] = &[
    ("balance", Ty::Num),
    ("equity", Ty::Num),
    ("margin", Ty::Num),
    ("free_margin", Ty::Num),
    ("margin_level", Ty::Num),
    ("profit", Ty::Num),
    ("currency", Ty::Str),
];

pub const ERROR: &[(&str, Ty)] = &[("error", Ty::Str), ("details", Ty::Str), ("code", Ty::Str)];

pub const CONNECTED: &[(&str, Ty)] = &[
    ("message", Ty::Str),
    ("server_time", Ty::Time),
    ("session", Ty::Str),
];

pub const DISCONNECTED: &[(&str, Ty)] = &[("reason", Ty::Str), ("reconnect", Ty::Bool)];

pub const HEARTBEAT_ACK: &[(&str, Ty)] = &[("timestamp", Ty::Int)];

/// True when `s` is an RFC 3339 timestamp in UTC written with `Z`.
pub fn is_rfc3339_utc(s: &str) -> bool {
    s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

fn type_ok(v: &Value, ty: Ty) -> bool {
    match ty {
        Ty::Str => v.is_string(),
        Ty::Num => v.is_number(),
        Ty::Int => v.is_i64() || v.is_u64(),
        Ty::Bool => v.is_boolean(),
        Ty::Obj => v.is_object(),
        Ty::Arr => v.is_array(),
        Ty::Time => v.as_str().is_some_and(is_rfc3339_utc),
    }
}

/// Checks that `v` is an object with every field of `spec` of the right
/// type, and (unless `extra` is `None`) no fields but those and `extra`.
pub fn check_object(
    what: &str,
    v: &Value,
    spec: &[(&str, Ty)],
    extra: Option<&[(&str, Ty)]>,
) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Err(format!("{what}: expected an object, got {v}"));
    };
    for (name, ty) in spec {
        match map.get(*name) {
            None => return Err(format!("{what}: missing field `{name}` in {v}")),
            Some(field) if !type_ok(field, *ty) => {
                return Err(format!(
                    "{what}: field `{name}` should be {ty:?}, got {field} in {v}"
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = extra {
        for (name, field) in map {
            if spec.iter().any(|(n, _)| n == name) {
                continue;
            }
            match extra.iter().find(|(n, _)| n == name) {
                None => return Err(format!("{what}: unexpected field `{name}` in {v}")),
                Some((_, ty)) if !type_ok(field, *ty) => {
                    return Err(format!(
                        "{what}: field `{name}` should be {ty:?}, got {field} in {v}"
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

const SEQ: &[(&str, Ty)] = &[("seq", Ty::Int)];
const NONE: &[(&str, Ty)] = &[];

/// Checks a server → client event's payload against the spec.
pub fn check_event(event: &str, data: &Value) -> Result<(), String> {
    match event {
        "quotes" => check_object("quotes", data, QUOTE, Some(NONE)),
        "positions_update" | "orders_update" => {
            let spec = if event == "orders_update" {
                ORDER
            } else {
                POSITION
            };
            let list = data
                .as_array()
                .ok_or_else(|| format!("{event}: expected an array, got {data}"))?;
            list.iter()
                .try_for_each(|item| check_object(event, item, spec, Some(NONE)))
        }
        "logs_update" => check_object("logs_update", data, LOG, Some(SEQ)),
        "signals_update" => {
            check_object("signals_update", data, SIGNAL, Some(SEQ))?;
            data["validators"]
                .as_array()
                .into_iter()
                .flatten()
                .try_for_each(|v| {
                    check_object("signals_update.validators[]", v, VALIDATOR, Some(NONE))
                })
        }
        "account_update" => check_object("account_update", data, ACCOUNT, Some(NONE)),
        "error" => check_object("error", data, ERROR, None),
        "connected" => check_object("connected", data, CONNECTED, None),
        "disconnected" => check_object("disconnected", data, DISCONNECTED, None),
        "heartbeat_ack" => {
            check_object("heartbeat_ack", data, HEARTBEAT_ACK, None)?;
            match data.get("client_timestamp") {
                Some(v) if v.is_number() || v.is_null() => Ok(()),
                other => Err(format!(
                    "heartbeat_ack: client_timestamp should echo the client's number, got {other:?}"
                )),
            }
        }
        "subscribed" | "unsubscribed" => {
            let list = data["channels"]
                .as_array()
                .ok_or_else(|| format!("{event}: expected {{\"channels\": [...]}}, got {data}"))?;
            if list.iter().all(Value::is_string) {
                Ok(())
            } else {
                Err(format!("{event}: channels must be strings: {data}"))
            }
        }
        _ => Ok(()),
    }
}

/// [`check_event`], panicking with the problem.
pub fn assert_event(event: &str, data: &Value) {
    if let Err(e) = check_event(event, data) {
        panic!("{e}");
    }
}

/// Asserts an `error` payload with this `code`.
pub fn assert_error(data: &Value, code: &str) {
    assert_event("error", data);
    assert_eq!(data["code"], code, "error code in {data}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_examples_pass_and_type_changes_fail() {
        let quote = json!({"symbol":"EURUSD","bid":1.085,"ask":1.0852,"spread":20,"timestamp":"2024-01-01T12:00:00Z"});
        assert!(check_event("quotes", &quote).is_ok());
        let mut bad = quote.clone();
        bad["spread"] = json!(20.5);
        assert!(check_event("quotes", &bad).is_err());
        bad = quote.clone();
        bad["bid"] = json!("1.085");
        assert!(check_event("quotes", &bad).is_err());
        bad = quote.clone();
        bad["timestamp"] = json!("2024-01-01T12:00:00+01:00");
        assert!(check_event("quotes", &bad).is_err());
        bad = quote.clone();
        bad["extra"] = json!(1);
        assert!(check_event("quotes", &bad).is_err());
        let log = json!({"seq":3,"timestamp":"2024-01-01T12:00:00.123Z","level":"INFO","message":"m","module":"x","extra":{}});
        assert!(check_event("logs_update", &log).is_ok());
        assert!(check_event("positions_update", &json!([])).is_ok());
        assert!(check_event("positions_update", &json!({})).is_err());
        let signal = json!({"uuid":"s","symbol":"EURUSD","side":"buy","volume":0.01,"tp":50,"sl":30,
            "source":"RSI","confidence":0.85,"timestamp":"2024-01-01T12:00:00Z",
            "validators":[{"name":"AI","type":"ai","approved":"yes","confidence":0.9,"reason":"r","timestamp":"2024-01-01T12:00:01Z"}],
            "status":"approved"});
        assert!(
            check_event("signals_update", &signal).is_err(),
            "approved must be a boolean"
        );
    }
}
