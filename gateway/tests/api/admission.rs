//! The per-user connection cap, and the slot a connection gives back.

use crate::support::{spawn_app, within, Read, Ws};

#[tokio::test]
async fn the_cap_refuses_one_more_and_frees_the_slot_when_a_client_leaves() {
    let app = spawn_app(&["--max-connections-per-user", "1"]).await;
    let url = app.ws_url(&format!("/ws?token={}", app.token("alice")));
    let mut first = Ws::connect(&url, None).await;
    first.event("connected").await;

    let mut second = Ws::connect(&url, None).await;
    assert_eq!(second.event("error").await["code"], "RATE_LIMITED");
    assert_eq!(
        second.read().await,
        Read::Close(Some((1008, "RATE_LIMITED".into())))
    );

    // Another user is not affected.
    let other = app.ws_url(&format!("/ws?token={}", app.token("bob")));
    Ws::connect(&other, None).await.event("connected").await;

    // Once the first leaves, its slot is free again (released in the
    // background: retry until it is, within the deadline).
    first.close().await;
    within("the slot to be released", async {
        loop {
            let mut again = Ws::connect(&url, None).await;
            if let Read::Text(text) = again.read().await {
                if text.contains("\"connected\"") {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    app.stop().await;
}
