//! `threadline`: one binary for the roles of a tracing estate: `collector` (agent or gateway, as
//! its config says), `validate`, `store`, `all-in-one`, `operator` and `install`, `demo`,
//! `search`/`trace`, and the `loadgen`/`sink` pair used by benchmarks and tests.

mod all_in_one;
mod collector;
mod demo;
mod doctor;
#[cfg(feature = "k8s")]
mod operator;
mod query;
mod store;
mod store_convert;
mod tenancy;

/// `operator` and `install` in a binary built without the `k8s` feature: they take any
/// arguments and refuse, naming the feature.
#[cfg(not(feature = "k8s"))]
mod operator {
    #[derive(clap::Args)]
    pub struct OperatorArgs {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        _args: Vec<String>,
    }

    pub type InstallArgs = OperatorArgs;

    pub async fn run(_: OperatorArgs) -> anyhow::Result<()> {
        anyhow::bail!("operator: {}", threadline_config::built_without("k8s"))
    }

    pub fn install(_: InstallArgs) -> anyhow::Result<()> {
        anyhow::bail!("install: {}", threadline_config::built_without("k8s"))
    }
}

use clap::{Parser, Subcommand};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc tuning: return freed memory to the OS within about a second, from a background thread,
/// so that RSS (what memory_limiter and Kubernetes measure) follows what is really in use.
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "threadline",
    version,
    about = "Collect, sample, store and query traces: one binary for the whole path",
    // A flag given again wins over the earlier one, as `--set` does for keys.
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a collector (agent or gateway) from an OpenTelemetry Collector config.
    Collector(collector::ConfigArgs),
    /// Check a config and list every error with its YAML path; exits non-zero when there are any.
    Validate(collector::ConfigArgs),
    /// List the component types this build supports; with `--docs`, write their reference.
    Components(collector::ComponentsArgs),
    /// Collector (gateway pipeline with tail sampling) and store in one process, on built-in
    /// defaults: the quickest way to see the whole path.
    AllInOne(all_in_one::AllInOneArgs),
    /// Run the demo estate (frontend -> orders over HTTP -> payments over gRPC, inventory over a
    /// queue), instrumented
    /// with OpenTelemetry and sending to 127.0.0.1:4317.
    Demo(demo::DemoArgs),
    /// Search a running store with TraceQL and list the matching traces.
    Search(query::SearchArgs),
    /// Print one trace from a running store as a waterfall.
    Trace(query::TraceArgs),
    /// Find where traces break: lost context, broken traces, span-name cardinality, PII, and
    /// collector pipeline health (--metrics, --config).
    Doctor(doctor::DoctorArgs),
    /// Run the trace store: OTLP in, blocks on disk or S3, Grafana Tempo's HTTP API out.
    Store(store::StoreArgs),
    /// The Kubernetes operator: reconcile OpenTelemetryCollector resources, inject
    /// auto-instrumentation (`operator run`), or render offline (`operator render -f`).
    Operator(operator::OperatorArgs),
    /// Print every object that installs the operator: `threadline install | kubectl apply -f -`.
    Install(operator::InstallArgs),
    /// Send realistic OTLP trace load to an endpoint (benchmarks and tests).
    Loadgen(threadline_loadgen::LoadgenArgs),
    /// Receive OTLP and count spans (benchmarks and tests).
    Sink(threadline_loadgen::SinkArgs),
}

/// Returns every arena's unused dirty pages to the OS at once (memory_limiter calls this above its
/// hard limit, as upstream forces a garbage collection there).
#[cfg(not(target_env = "msvc"))]
fn purge_allocator() {
    // MALLCTL_ARENAS_ALL is 4096. The call takes no arguments and cannot fail in a way we could act on.
    let name = b"arena.4096.purge\0";
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(not(target_env = "msvc"))]
    threadline_collector::processors::memory_limiter::set_memory_release_hook(purge_allocator);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Collector(args) => collector::run(args).await,
            Command::Validate(args) => collector::validate(args),
            Command::Components(args) => collector::components(args),
            Command::Store(args) => store::run(args).await,
            Command::AllInOne(args) => all_in_one::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Search(args) => tokio::task::spawn_blocking(move || query::search(args))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
            Command::Trace(args) => tokio::task::spawn_blocking(move || query::trace(args))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
            Command::Doctor(args) => tokio::task::spawn_blocking(move || doctor::run(args))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
            Command::Operator(args) => operator::run(args).await,
            Command::Install(args) => operator::install(args),
            Command::Loadgen(args) => threadline_loadgen::run_loadgen(args).await.map(|_| ()),
            Command::Sink(args) => threadline_loadgen::run_sink(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
