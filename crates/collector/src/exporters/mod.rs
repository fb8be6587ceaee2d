//! Exporters: send pipeline data out of the process. `otlp` (gRPC) and `otlphttp` send to OTLP
//! backends through the shared queue-and-retry machinery in [`helper`]; `debug` writes to the log;
//! `loadbalancing` routes spans by trace id (or service) over a set of OTLP backends.

pub mod compress;
pub mod debug;
pub mod helper;
pub mod loadbalancing;
pub mod otlp;
pub mod otlphttp;
#[cfg(test)]
pub(crate) mod testkit;

/// `User-Agent` of outgoing requests, in the form upstream uses (`<name>/<version> (<os>/<arch>)`).
pub fn user_agent() -> String {
    format!(
        "Threadline/{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
