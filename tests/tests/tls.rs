//! TLS served directly (contract section 8): with `TLS_CERT_FILE` and
//! `TLS_KEY_FILE` the gateway speaks WSS/HTTPS, and socket.io-client, which
//! checks the certificate, streams over both transports.

use e2e_tests::keys::{KeyKind, KeyPair};
use e2e_tests::{workspace_root, Gateway, Plan};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed certificate for 127.0.0.1 (openssl CLI).
fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate(dir, KeyKind::Ec, "tls").private_pem;
    let cert = dir.join("tls.crt");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-key")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req -x509 failed");
    (cert, key)
}

/// Runs the Node client's plan to its end, trusting `ca`.
fn run_node(plan: &Plan, ca: &Path) -> Vec<(String, Value)> {
    let out = Command::new("node")
        .arg(workspace_root().join("tests/clients/node/sio-client.mjs"))
        .arg(plan.to_json())
        .env("NODE_EXTRA_CA_CERTS", ca)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "client plan failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["event"].as_str().unwrap_or("").to_owned(),
                v["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn socket_io_over_wss_and_https_polling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed_cert(dir.path());
    let gw = Gateway::standalone(&[
        ("TLS_CERT_FILE", cert.to_str().expect("utf-8")),
        ("TLS_KEY_FILE", key.to_str().expect("utf-8")),
    ]);
    assert!(
        gw.stdout_lines()
            .iter()
            .any(|l| l.contains("listening on https://")),
        "{:?}",
        gw.stdout_lines()
    );
    let url = format!("https://{}", gw.addr());
    for transport in ["websocket", "polling"] {
        let plan = Plan::new(&url)
            .token(gw.standalone_token())
            .transports(&[transport])
            .connected()
            .subscribe(&["quotes"])
            .wait_for("quotes", 10_000)
            .disconnect();
        let seen = run_node(&plan, &cert);
        let connect = seen.iter().find(|(e, _)| e == "connect").expect("connect");
        assert_eq!(connect.1["transport"], transport);
        assert!(seen
            .iter()
            .any(|(e, d)| e == "quotes" && d["bid"].is_number()));
    }
    gw.assert_no_panic();
}
