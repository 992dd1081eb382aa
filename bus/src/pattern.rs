//! NATS wildcard matching for the in-memory bus: `*` is one token, `>` is
//! one or more trailing tokens.

pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards() {
        assert!(subject_matches("mt5.>", "mt5.demo.logs"));
        assert!(subject_matches("mt5.>", "mt5.demo.quotes.EURUSD"));
        assert!(!subject_matches("mt5.>", "mt5"));
        assert!(subject_matches("mt5.*.logs", "mt5.demo.logs"));
        assert!(!subject_matches("mt5.*.logs", "mt5.demo.signals"));
        assert!(!subject_matches("mt5.*.logs", "mt5.demo.logs.x"));
        assert!(subject_matches("mt5.demo.logs", "mt5.demo.logs"));
        assert!(!subject_matches("mt5.demo.logs", "mt5.demo"));
        assert!(!subject_matches("mt6.>", "mt5.demo.logs"));
    }
}
