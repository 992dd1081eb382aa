//! One order per client (contract section 11, "Order"): 50 clients on each
//! kind of connection send `subscribe` then `unsubscribe` (then six
//! heartbeats) back to back, with acks. Every one of them must end
//! unsubscribed (no quotes after `unsubscribed`), and see each reply
//! followed by its ack, in the order the events were sent.

use e2e_tests::order::{expected_sequence, run_order_clients, OrderClient, OrderReport};
use e2e_tests::Gateway;
use std::time::Duration;

const CLIENTS: usize = 50;

fn check(kind: OrderClient, fast_path: bool) {
    let gw = Gateway::standalone(&[
        (
            "SOCKETIO_FAST_PATH",
            if fast_path { "true" } else { "false" },
        ),
        ("MAX_CONNECTIONS_PER_USER", "500"),
    ]);
    let reports = run_order_clients(
        kind,
        &gw.http_url(),
        gw.standalone_token(),
        CLIENTS,
        Duration::from_secs(90),
    );
    assert_eq!(reports.len(), CLIENTS, "{kind:?}: {reports:?}");
    let expected = expected_sequence();
    let wrong: Vec<&OrderReport> = reports
        .iter()
        .filter(|r| r.error.is_some() || r.sequence != expected || r.quotes_after_unsubscribed > 0)
        .collect();
    assert!(
        wrong.is_empty(),
        "{kind:?}: {} of {CLIENTS} clients saw another order, or stayed subscribed; expected {expected:?}; first ones:\n{:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    if kind != OrderClient::NodeWebSocket {
        // The default transports upgrade once they can.
        assert!(
            reports.iter().all(|r| r.transport == "websocket"),
            "{reports:?}"
        );
    }
    gw.assert_no_panic();
}

#[test]
fn socket_io_client_websocket_only() {
    check(OrderClient::NodeWebSocket, true);
}

#[test]
fn socket_io_client_websocket_only_on_socketioxide() {
    check(OrderClient::NodeWebSocket, false);
}

#[test]
fn socket_io_client_polling_then_upgrade() {
    check(OrderClient::NodeDefault, true);
}

#[test]
fn python_socketio() {
    check(OrderClient::Python, true);
}
