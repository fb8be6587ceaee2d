//! `threadline store` configuration, shaped like Grafana Tempo's (`server`, `distributor`,
//! `ingester`, `compactor`, `storage.trace`, `multitenancy_enabled`), so a Tempo user finds the
//! keys where they expect them. Unknown keys are rejected.

use std::path::PathBuf;

use serde::Deserialize;
use threadline_config::settings::GoDuration;
use threadline_config::ConfigError;

/// The built-in configuration: everything on 127.0.0.1, data under `./threadline-data`.
pub const DEFAULT_CONFIG: &str = include_str!("defaults/store.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// What this process does, as Tempo's `target`: `all` (default: everything),
    /// `ingester` (receives spans, writes the WAL and blocks), `querier` (serves the API from the
    /// blocks in storage), `compactor` (compaction and retention). Processes sharing one bucket
    /// split the work this way; exactly one should compact.
    #[serde(default = "default_target")]
    pub target: String,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub distributor: DistributorConfig,
    #[serde(default)]
    pub ingester: IngesterConfig,
    #[serde(default)]
    pub compactor: CompactorConfig,
    #[serde(default)]
    pub query_frontend: QueryFrontendConfig,
    pub storage: StorageConfig,
    /// Separate tenants by the `X-Scope-OrgID` header (queries without it are refused). Off: one
    /// tenant, `single-tenant`, as Tempo.
    #[serde(default)]
    pub multitenancy_enabled: bool,
    /// Require credentials on the HTTP API and the OTLP receivers, each mapped to the one
    /// tenant it may read and write: `bearer_tokens: [{token | token_file, tenant}]`,
    /// `basic: [{username, password (plain or bcrypt), tenant}]`. No credential: 401; a
    /// credential asking for another tenant's `X-Scope-OrgID`: 403. Needs
    /// `multitenancy_enabled: true`. See [`crate::auth`].
    #[serde(default)]
    pub auth: Option<crate::auth::StoreAuthConfig>,
    /// Metrics from traces (service graphs, span metrics), with Tempo's keys.
    #[serde(default)]
    pub metrics_generator: crate::generator::MetricsGeneratorConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API. Default `127.0.0.1` (Tempo listens on every interface; set
    /// `0.0.0.0` to do the same).
    #[serde(default = "default_listen_address")]
    pub http_listen_address: String,
    /// Port of the HTTP API. Default 3200, as Tempo.
    #[serde(default = "default_http_port")]
    pub http_listen_port: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen_address: default_listen_address(),
            http_listen_port: default_http_port(),
        }
    }
}

fn default_target() -> String {
    "all".into()
}

fn default_listen_address() -> String {
    "127.0.0.1".into()
}

fn default_http_port() -> u16 {
    3200
}

/// How many queries the API takes at once, with Tempo's key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryFrontendConfig {
    /// Queries (search, tags, metrics, Threadline's insight endpoints) one tenant may have in
    /// flight; one more is refused with 503 and `Retry-After`, so an overloaded store says so
    /// instead of slowing every query down. Default 2000, as Tempo (which answers 429).
    #[serde(default = "default_max_outstanding_per_tenant")]
    pub max_outstanding_per_tenant: usize,
}

impl Default for QueryFrontendConfig {
    fn default() -> Self {
        QueryFrontendConfig {
            max_outstanding_per_tenant: default_max_outstanding_per_tenant(),
        }
    }
}

fn default_max_outstanding_per_tenant() -> usize {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributorConfig {
    /// Receivers, in the collector's syntax. Only `otlp` exists; its `protocols.grpc` and
    /// `protocols.http` take every setting of the collector's `otlp` receiver, with one default
    /// of the store's own: gRPC `max_recv_msg_size_mib` is 64 (the collector's is 4), since a
    /// gateway's full batches of 8192 spans exceed 4 MiB.
    #[serde(default = "default_receivers")]
    pub receivers: serde_yaml_ng::Mapping,
}

impl Default for DistributorConfig {
    fn default() -> Self {
        DistributorConfig {
            receivers: default_receivers(),
        }
    }
}

fn default_receivers() -> serde_yaml_ng::Mapping {
    serde_yaml_ng::from_str(
        "otlp: {protocols: {grpc: {endpoint: 127.0.0.1:4317}, http: {endpoint: 127.0.0.1:4318}}}",
    )
    .unwrap_or_default()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngesterConfig {
    /// The head block (in memory, and in the WAL) is cut into a block at least this often.
    /// Default `30s`: short, so that the WAL replayed after a crash stays small. (Tempo: 30m.)
    #[serde(default = "default_max_block_duration")]
    pub max_block_duration: GoDuration,
    /// ... or when it holds this many encoded bytes. Default 256 MiB.
    #[serde(default = "default_max_block_bytes")]
    pub max_block_bytes: u64,
}

impl Default for IngesterConfig {
    fn default() -> Self {
        IngesterConfig {
            max_block_duration: default_max_block_duration(),
            max_block_bytes: default_max_block_bytes(),
        }
    }
}

fn default_max_block_duration() -> GoDuration {
    GoDuration::from_secs(30)
}

fn default_max_block_bytes() -> u64 {
    256 * 1024 * 1024
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactorConfig {
    #[serde(default)]
    pub compaction: CompactionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    /// Blocks older than this are deleted. Default `168h` (7 days).
    #[serde(default = "default_block_retention")]
    pub block_retention: GoDuration,
    /// How often compaction and retention run (and how often a querier looks for new blocks).
    /// Default `30s`.
    #[serde(default = "default_compaction_cycle")]
    pub compaction_cycle: GoDuration,
    /// How long the files of a block replaced by compaction (or past retention) stay, so that
    /// reads that listed it before finish. Tempo's key and default: `1h`.
    #[serde(default = "default_compacted_block_retention")]
    pub compacted_block_retention: GoDuration,
    /// Blocks of a tenant are merged while the result stays under this size. Default 1 GiB.
    #[serde(default = "default_max_compaction_bytes")]
    pub max_block_bytes: u64,
    /// Merge at most this many blocks at once. Default 8.
    #[serde(default = "default_max_compaction_objects")]
    pub max_compaction_objects: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            block_retention: default_block_retention(),
            compaction_cycle: default_compaction_cycle(),
            compacted_block_retention: default_compacted_block_retention(),
            max_block_bytes: default_max_compaction_bytes(),
            max_compaction_objects: default_max_compaction_objects(),
        }
    }
}

fn default_block_retention() -> GoDuration {
    GoDuration::from_secs(168 * 3600)
}

fn default_compacted_block_retention() -> GoDuration {
    GoDuration::from_secs(3600)
}

fn default_compaction_cycle() -> GoDuration {
    GoDuration::from_secs(30)
}

fn default_max_compaction_bytes() -> u64 {
    1024 * 1024 * 1024
}

fn default_max_compaction_objects() -> usize {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub trace: TraceStorageConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceStorageConfig {
    /// Where blocks live: `local`, `s3` (any S3-compatible server), `gcs` or `azure`.
    pub backend: String,
    pub wal: WalConfig,
    #[serde(default)]
    pub local: Option<LocalConfig>,
    #[serde(default)]
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub gcs: Option<GcsConfig>,
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    /// Memory for the rows of block indexes (per trace: id, page, times, root, services),
    /// in MiB. Rows of blocks beyond it are read from storage again when a search needs them;
    /// trace by id never needs them. Each block also keeps a summary in memory for good, about
    /// 2 bytes per trace. Default 32 (the rows of about 600k traces): a search over more blocks
    /// reads the others' rows again, about 16 ns per trace (bench/index_memory.py).
    #[serde(default = "default_index_cache_mib")]
    pub index_cache_mib: u64,
}

fn default_index_cache_mib() -> u64 {
    32
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket_name: String,
    /// Path of a service account JSON key; empty uses the environment's credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, workload identity).
    #[serde(default)]
    pub service_account_path: String,
    /// Key prefix of every object.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub container_name: String,
    pub storage_account_name: String,
    /// Account key; empty uses the environment's credentials (managed identity, `AZURE_*`).
    #[serde(default)]
    pub storage_account_key: String,
    /// Blob endpoint, for Azurite or sovereign clouds; empty uses the public cloud's.
    #[serde(default)]
    pub endpoint: String,
    /// Key prefix of every object.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Directory of the write-ahead log (always local).
    pub path: PathBuf,
    /// When the WAL is fsynced, and so what an acknowledged request survives:
    /// * `always` (default): a request is acknowledged only after its WAL record is fsynced
    ///   (requests arriving together share one fsync). It survives a crash and a power loss.
    /// * `interval`: acknowledged once written, fsynced within `fsync_interval`. A process
    ///   crash loses nothing; a power loss at most the last `fsync_interval`.
    /// * `never`: left to the OS. A process crash loses nothing; a power loss the last seconds.
    #[serde(default = "default_fsync")]
    pub fsync: String,
    /// With `fsync: interval`, the longest an acknowledged request waits for its fsync.
    /// Default `1s`.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval: GoDuration,
}

impl WalConfig {
    /// The policy `fsync` and `fsync_interval` describe (valid after `StoreConfig::validate`;
    /// anything else reads as `always`, the safe choice).
    pub fn fsync_policy(&self) -> crate::wal::Fsync {
        match self.fsync.as_str() {
            "interval" => crate::wal::Fsync::Interval(self.fsync_interval.as_duration()),
            "never" => crate::wal::Fsync::Never,
            _ => crate::wal::Fsync::Always,
        }
    }
}

fn default_fsync() -> String {
    "always".into()
}

fn default_fsync_interval() -> GoDuration {
    GoDuration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Directory of the blocks.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// `host:port` of the S3 API, e.g. `s3.dualstack.us-east-2.amazonaws.com` or `minio:9000`.
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key: String,
    #[serde(default)]
    pub secret_key: String,
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// Key prefix of every object.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most S3-compatible servers need.
    #[serde(default = "default_true")]
    pub forcepathstyle: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_true() -> bool {
    true
}

impl StoreConfig {
    pub fn ingests(&self) -> bool {
        matches!(self.target.as_str(), "all" | "ingester")
    }

    pub fn compacts(&self) -> bool {
        matches!(self.target.as_str(), "all" | "compactor")
    }

    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        self.metrics_generator.validate(&mut errors);
        if let Some(auth) = &self.auth {
            auth.validate(self.multitenancy_enabled, &mut errors);
        }
        if self.query_frontend.max_outstanding_per_tenant == 0 {
            errors.push(ConfigError::new(
                "query_frontend::max_outstanding_per_tenant",
                "0 would refuse every query: use a number of queries of at least 1",
            ));
        }
        if !matches!(
            self.target.as_str(),
            "all" | "ingester" | "querier" | "compactor"
        ) {
            errors.push(ConfigError::new(
                "target",
                format!(
                    "{:?} is not valid (valid values: all, ingester, querier, compactor)",
                    self.target
                ),
            ));
        }
        let trace = &self.storage.trace;
        #[cfg(not(feature = "cloud-storage"))]
        if matches!(trace.backend.as_str(), "s3" | "gcs" | "azure") {
            errors.push(ConfigError::new(
                "storage::trace::backend",
                format!(
                    "{}: {}",
                    trace.backend,
                    threadline_config::built_without("cloud-storage")
                ),
            ));
        }
        match trace.backend.as_str() {
            "local" if trace.local.is_none() => errors.push(ConfigError::new(
                "storage::trace::local::path",
                "the local backend needs a directory for its blocks",
            )),
            "s3" if trace.s3.is_none() => errors.push(ConfigError::new(
                "storage::trace::s3",
                "the s3 backend needs bucket and endpoint",
            )),
            "gcs" if trace.gcs.is_none() => errors.push(ConfigError::new(
                "storage::trace::gcs",
                "the gcs backend needs bucket_name",
            )),
            "azure" if trace.azure.is_none() => errors.push(ConfigError::new(
                "storage::trace::azure",
                "the azure backend needs container_name and storage_account_name",
            )),
            "local" | "s3" | "gcs" | "azure" => {}
            other => errors.push(ConfigError::new(
                "storage::trace::backend",
                format!("{other:?} is not supported (valid values: local, s3, gcs, azure)"),
            )),
        }
        if !matches!(trace.wal.fsync.as_str(), "always" | "interval" | "never") {
            errors.push(ConfigError::new(
                "storage::trace::wal::fsync",
                format!(
                    "{:?} is not valid (valid values: always, interval, never)",
                    trace.wal.fsync
                ),
            ));
        }
        if trace.wal.fsync == "interval" && trace.wal.fsync_interval.is_zero() {
            errors.push(ConfigError::new(
                "storage::trace::wal::fsync_interval",
                "must be a positive duration such as 1s",
            ));
        }
        if self.ingester.max_block_duration.is_zero() {
            errors.push(ConfigError::new(
                "ingester::max_block_duration",
                "must be a positive duration such as 30s",
            ));
        }
        if self.compactor.compaction.compaction_cycle.is_zero() {
            errors.push(ConfigError::new(
                "compactor::compaction::compaction_cycle",
                "must be a positive duration such as 30s",
            ));
        }
        for key in self.distributor.receivers.keys() {
            if key.as_str() != Some("otlp") {
                errors.push(ConfigError::new(
                    "distributor::receivers",
                    format!("receiver {key:?} is not supported (valid values: otlp)"),
                ));
            }
        }
        errors
    }
}
