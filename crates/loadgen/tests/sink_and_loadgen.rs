//! The load generator against the counting sink, over real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use threadline_loadgen::{
    generate_load, Compression, LoadgenArgs, Protocol, Sink, SinkArgs, SinkStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sink_args() -> SinkArgs {
    SinkArgs {
        grpc_endpoint: "127.0.0.1:0".to_owned(),
        quiet: true,
        report_interval: 0.1,
        ..SinkArgs::default()
    }
}

fn loadgen_args(endpoint: SocketAddr, traces: u64) -> LoadgenArgs {
    LoadgenArgs {
        endpoint: Some(endpoint.to_string()),
        traces: Some(traces),
        seed: Some(42),
        ..LoadgenArgs::default()
    }
}

#[tokio::test]
async fn sink_counts_exactly_what_grpc_loadgen_got_acknowledged() {
    let sink = Sink::start(&sink_args()).await.unwrap();
    let report = generate_load(&LoadgenArgs {
        concurrency: 8,
        connections: 2,
        ..loadgen_args(sink.grpc_addr(), 2_000)
    })
    .await
    .unwrap();

    assert_eq!(report.sent_spans, 20_000);
    assert_eq!(report.failed_spans, 0);
    assert_eq!(report.requests, 40);
    assert_eq!(report.retryable_errors, 0);
    let stats = sink.stats();
    assert_eq!(stats.spans, report.sent_spans);
    assert_eq!(stats.requests, report.requests);
    assert!(report.spans_per_sec > 0.0);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn gzip_over_grpc_and_http_is_counted_too() {
    let sink = Sink::start(&SinkArgs {
        http_endpoint: Some("127.0.0.1:0".to_owned()),
        ..sink_args()
    })
    .await
    .unwrap();

    let grpc = generate_load(&LoadgenArgs {
        compression: Compression::Gzip,
        ..loadgen_args(sink.grpc_addr(), 300)
    })
    .await
    .unwrap();
    // 1234 traces: 24 full requests of 50 traces plus one of 34.
    let http = generate_load(&LoadgenArgs {
        protocol: Protocol::Http,
        compression: Compression::Gzip,
        ..loadgen_args(sink.http_addr().unwrap(), 1_234)
    })
    .await
    .unwrap();
    let plain_http = generate_load(&LoadgenArgs {
        protocol: Protocol::Http,
        spans_per_request: 100,
        ..loadgen_args(sink.http_addr().unwrap(), 55)
    })
    .await
    .unwrap();

    assert_eq!(grpc.sent_spans, 3_000);
    assert_eq!(http.sent_spans, 12_340);
    assert_eq!(http.requests, 25);
    assert_eq!(plain_http.sent_spans, 550);
    assert_eq!(
        grpc.failed_spans + http.failed_spans + plain_http.failed_spans,
        0
    );
    let stats = sink.stats();
    assert_eq!(stats.spans, 3_000 + 12_340 + 550);
    assert_eq!(
        stats.requests,
        grpc.requests + http.requests + plain_http.requests
    );
    assert_eq!(stats.invalid_requests, 0);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_outage_shows_up_as_retryable_errors_and_nothing_is_lost() {
    let sink = Sink::start(&SinkArgs {
        unavailable_for: 0.4,
        ..sink_args()
    })
    .await
    .unwrap();
    let report = generate_load(&LoadgenArgs {
        max_retries: 10,
        ..loadgen_args(sink.grpc_addr(), 500)
    })
    .await
    .unwrap();

    assert!(report.retryable_errors > 0, "{report:?}");
    assert_eq!(report.retries, report.retryable_errors);
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("Unavailable"),
        "{report:?}"
    );
    assert_eq!(report.sent_spans, 5_000);
    assert_eq!(report.failed_spans, 0);
    let stats = sink.stats();
    assert_eq!(stats.spans, 5_000);
    assert_eq!(stats.rejected_requests, report.retryable_errors);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn retries_exhausted_count_as_failed_spans() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let sink = Sink::start(&SinkArgs {
            http_endpoint: Some("127.0.0.1:0".to_owned()),
            fail_first: 3,
            ..sink_args()
        })
        .await
        .unwrap();
        let endpoint = match protocol {
            Protocol::Grpc => sink.grpc_addr(),
            Protocol::Http => sink.http_addr().unwrap(),
        };
        // One request at a time, no retries: exactly the first three requests fail.
        let report = generate_load(&LoadgenArgs {
            protocol,
            concurrency: 1,
            max_retries: 0,
            ..loadgen_args(endpoint, 500)
        })
        .await
        .unwrap();

        assert_eq!(report.failed_requests, 3, "{protocol:?}");
        assert_eq!(report.failed_spans, 1_500);
        assert_eq!(report.retryable_errors, 3);
        assert_eq!(report.sent_spans, 3_500);
        assert_eq!(sink.stats().spans, 3_500);
        sink.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn rate_is_paced() {
    let sink = Sink::start(&sink_args()).await.unwrap();
    let report = generate_load(&LoadgenArgs {
        endpoint: Some(sink.grpc_addr().to_string()),
        rate: 10_000.0,
        duration: Some(1.0),
        ..LoadgenArgs::default()
    })
    .await
    .unwrap();
    // 20 requests of 500 spans, one every 50 ms.
    assert!((8_000..=10_500).contains(&report.sent_spans), "{report:?}");
    assert!(report.seconds >= 0.9, "{report:?}");
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn stats_endpoint_serves_the_counts() {
    let sink = Sink::start(&SinkArgs {
        stats_endpoint: Some("127.0.0.1:0".to_owned()),
        ..sink_args()
    })
    .await
    .unwrap();
    let report = generate_load(&loadgen_args(sink.grpc_addr(), 100))
        .await
        .unwrap();
    assert_eq!(report.sent_spans, 1_000);
    // Let the reporter sample a rate at least once.
    tokio::time::sleep(Duration::from_millis(250)).await;

    let body = http_get(sink.stats_addr().unwrap(), "/stats").await;
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["spans"], 1_000);
    assert_eq!(served["requests"], 2);
    assert!(served["seconds"].as_f64().unwrap() > 0.0);
    let SinkStats { spans, .. } = sink.stats();
    assert_eq!(spans, 1_000);
    sink.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_receiver_fails_after_retries() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = generate_load(&LoadgenArgs {
        max_retries: 1,
        concurrency: 1,
        ..loadgen_args(port, 50)
    })
    .await
    .unwrap();
    assert_eq!(report.sent_spans, 0);
    assert_eq!(report.failed_spans, 500);
    assert_eq!(report.retryable_errors, 2);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    // Accepts connections and keeps them open without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let report = generate_load(&LoadgenArgs {
        protocol: Protocol::Http,
        concurrency: 1,
        max_retries: 0,
        request_timeout: 0.3,
        ..loadgen_args(addr, 50)
    })
    .await
    .unwrap();
    silent.abort();
    assert_eq!(report.failed_spans, 500);
    assert_eq!(report.retryable_errors, 1);
    assert!(report.last_error.unwrap().contains("no answer"));
    assert!(report.seconds < 5.0);
}

/// Minimal HTTP/1.0 GET returning the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response.split("\r\n\r\n").nth(1).unwrap().to_owned()
}
