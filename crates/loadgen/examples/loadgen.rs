//! Stand-alone `loadgen` / `sink` binary, the same commands `threadline loadgen` and
//! `threadline sink` expose. Handy for benchmarks before (or without) building the CLI:
//!
//! ```text
//! cargo run --release -p threadline-loadgen --example loadgen -- sink --grpc-endpoint 127.0.0.1:14317
//! cargo run --release -p threadline-loadgen --example loadgen -- loadgen --endpoint 127.0.0.1:14317 --rate 50000
//! ```

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "OTLP trace load generator and counting sink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send realistic traces over OTLP and print a JSON summary.
    Loadgen(threadline_loadgen::LoadgenArgs),
    /// Receive OTLP and count spans.
    Sink(threadline_loadgen::SinkArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Loadgen(args) => {
            let report = threadline_loadgen::run_loadgen(args).await?;
            if report.failed_spans > 0 {
                eprintln!(
                    "loadgen: {} spans failed; last error: {}",
                    report.failed_spans,
                    report.last_error.as_deref().unwrap_or("none")
                );
            }
            Ok(())
        }
        Command::Sink(args) => threadline_loadgen::run_sink(args).await,
    }
}
