//! Shared by the store's HTTP tests: the API served on a real 127.0.0.1 port, and a plain
//! HTTP/1.1 GET that returns whatever the server answered (error statuses included).
// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use threadline_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves the API of `store` on a free 127.0.0.1 port.
pub async fn serve(store: Arc<Store>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, threadline_store::api::router(store))
            .await
            .unwrap()
    });
    address
}

/// An HTTP answer: status, the head in lower case (status line and headers), the body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// GET `path`, with `org` as `X-Scope-OrgID` when given.
pub async fn get(address: SocketAddr, path: &str, org: Option<&str>) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let org = org.map_or(String::new(), |o| format!("X-Scope-OrgID: {o}\r\n"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n{org}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Answer {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}
