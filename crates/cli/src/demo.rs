//! The `demo` command: the instrumented estate, sending to a collector or all-in-one.

use std::net::SocketAddr;

use clap::Args;
use threadline_demo::estate::{self, EstateOptions};

#[derive(Args)]
pub struct DemoArgs {
    /// OTLP/gRPC endpoint to send spans to.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    otlp_endpoint: String,
    /// Address of the frontend (it also serves the W3C trace-context test endpoint, POST /test).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests per second sent to the frontend (0: serve only).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Share of requests that fail (the card is declined).
    #[arg(long, default_value_t = 0.1)]
    error_ratio: f64,
    /// Share of requests that take more than 2 s.
    #[arg(long, default_value_t = 0.05)]
    slow_ratio: f64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let running = estate::start(EstateOptions {
        otlp_endpoint: args.otlp_endpoint.clone(),
        frontend: args.listen,
        rate: args.rate,
        error_ratio: args.error_ratio,
        slow_ratio: args.slow_ratio,
    })
    .await?;
    println!(
        "demo estate running: frontend http://{} (GET /api/v2/orders/{{orderId}}, POST /test), spans to {}",
        running.frontend, args.otlp_endpoint
    );
    crate::collector::wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}
