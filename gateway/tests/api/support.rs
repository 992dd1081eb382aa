//! The test gateway ([`spawn_app`]) and the clients that talk to it: plain
//! WebSocket ([`Ws`]), Engine.IO over WebSocket ([`Eio`]) and one-shot HTTP
//! ([`get`], [`request`]: also Engine.IO long-polling).

use futures::{SinkExt, StreamExt};
use gateway::auth::Minter;
use gateway::config::Config;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// The HS256 secret of every test gateway.
pub const SECRET: &str = "api-test-secret-0123456789abcdef";
/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway running in this process.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancelling it starts the drain.
    pub shutdown: CancellationToken,
    /// `gateway::run`, until it returns.
    pub server: JoinHandle<Result<(), gateway::StartError>>,
}

/// Starts a standalone gateway on port 0 with `flags` on top of the test
/// defaults (HS256 with [`SECRET`]); the environment is not read.
pub async fn spawn_app(flags: &[&str]) -> TestApp {
    let mut args = vec!["--jwt-secret", SECRET, "--drain-timeout-secs", "2"];
    args.extend_from_slice(flags);
    let config = Config::for_tests(&args).expect("test flags parse");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port 0");
    let addr = listener.local_addr().expect("bound address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gateway::run(config, listener, shutdown.clone()));
    TestApp {
        addr,
        shutdown,
        server,
    }
}

impl TestApp {
    /// A valid token for `sub`.
    pub fn token(&self, sub: &str) -> String {
        Minter::from_secret(SECRET.as_bytes())
            .mint_for(sub, None, None, 3600)
            .expect("token")
    }

    /// `ws://…{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Drains and waits (with a deadline) for `gateway::run` to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let done = tokio::time::timeout(WAIT, &mut self.server)
            .await
            .expect("the gateway stops within the deadline");
        done.expect("the server task").expect("run returns Ok");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits for `future` at most [`WAIT`], failing the test with `what`.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A WebSocket client on a plain TCP stream.
pub struct Ws {
    /// The connection.
    stream: WebSocketStream<TcpStream>,
}

/// What a read returned: a text message, a close (code, reason), or the end.
#[derive(Debug, PartialEq)]
pub enum Read {
    Text(String),
    Close(Option<(u16, String)>),
    End,
}

impl Ws {
    /// Connects to `url`, with an `Authorization` header when given.
    pub async fn connect(url: &str, authorization: Option<&str>) -> Ws {
        let mut request = url.into_client_request().expect("a ws:// url");
        if let Some(value) = authorization {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let host = request.uri().authority().expect("host:port").to_string();
        let tcp = within("tcp connect", TcpStream::connect(host))
            .await
            .expect("tcp connect");
        let (stream, _) = within(
            "ws handshake",
            tokio_tungstenite::client_async(request, tcp),
        )
        .await
        .expect("ws handshake");
        Ws { stream }
    }

    pub async fn send_text(&mut self, text: &str) {
        within("send", self.stream.send(Message::text(text)))
            .await
            .expect("send");
    }

    /// Sends a plain-dialect event.
    pub async fn send_event(&mut self, event: &str, data: Value) {
        let text = serde_json::json!({"event": event, "data": data}).to_string();
        self.send_text(&text).await;
    }

    /// The next text message or close (pings and pongs skipped).
    pub async fn read(&mut self) -> Read {
        loop {
            match within("a message", self.stream.next()).await {
                Some(Ok(Message::Text(text))) => return Read::Text(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return Read::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Read::End,
            }
        }
    }

    /// The next text message; panics on a close.
    pub async fn text(&mut self) -> String {
        match self.read().await {
            Read::Text(text) => text,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next plain-dialect event with this name (others skipped),
    /// returning its data.
    pub async fn event(&mut self, name: &str) -> Value {
        loop {
            let text = self.text().await;
            let message: Value = serde_json::from_str(&text).expect("JSON event");
            if message["event"] == name {
                return message["data"].clone();
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// An Engine.IO v4 client over WebSocket, past its open packet.
pub struct Eio {
    /// The WebSocket.
    pub ws: Ws,
    /// The open packet's data (`sid`, `pingInterval`, …).
    pub open: Value,
}

impl Eio {
    /// Opens `/socket.io/?EIO=4&transport=websocket{query}` and reads the
    /// open packet.
    pub async fn open(app: &TestApp, query: &str, authorization: Option<&str>) -> Eio {
        let url = app.ws_url(&format!("/socket.io/?EIO=4&transport=websocket{query}"));
        let mut ws = Ws::connect(&url, authorization).await;
        let packet = ws.text().await;
        let open = packet
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("expected an open packet, got {packet}"));
        Eio {
            ws,
            open: serde_json::from_str(open).expect("open packet JSON"),
        }
    }

    /// The next packet that is not a server ping.
    pub async fn packet(&mut self) -> String {
        loop {
            let packet = self.ws.text().await;
            if packet != "2" {
                return packet;
            }
        }
    }

    /// The data of the next Socket.IO EVENT named `name` (others skipped).
    pub async fn event(&mut self, name: &str) -> Value {
        loop {
            let packet = self.packet().await;
            let Some(body) = packet.strip_prefix("42") else {
                continue;
            };
            let args: Vec<Value> = serde_json::from_str(body).expect("event JSON");
            if args.first().and_then(Value::as_str) == Some(name) {
                return args.get(1).cloned().unwrap_or(Value::Null);
            }
        }
    }
}

/// A GET over a fresh connection: (status, body).
pub async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    request(app.addr, "GET", path, headers, "").await
}

/// One request over a fresh connection: (status, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("tcp connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    within("the response", tcp.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
