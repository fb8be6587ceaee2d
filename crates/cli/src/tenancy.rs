//! The tenant on its way to the store. With the store's `multitenancy_enabled`, the `store`
//! exporter reads each request's tenant (`X-Scope-OrgID`) from the client metadata, as upstream's
//! `client.Info`: the receivers must pass request headers on (`include_metadata: true`) and every
//! processor that holds data and sends it on later (`batch`, `tail_sampling`) must keep that key
//! (`metadata_keys`), or the spans reach the store without a tenant and are refused.
//!
//! all-in-one configures its built-in pipeline so, and refuses a user's pipeline that would lose
//! the tenant, naming each key to set; `threadline store` always reads the tenant, as Tempo's
//! distributor.

use serde_yaml_ng::Value;
use threadline_config::{CollectorConfig, ComponentId, ConfigError, ConfigErrors};
use threadline_store::exporter::TENANT_METADATA_KEY;

/// Processors that hold data and send it on with only their `metadata_keys` as client metadata.
const HOLDING_PROCESSORS: [&str; 2] = ["batch", "tail_sampling"];

/// How the tenant key is written in configs (the lookup is case-insensitive).
const TENANT_KEY_AS_WRITTEN: &str = "X-Scope-OrgID";

/// The receivers and processors of every pipeline that ends in a `store` exporter, as
/// (section, id), each once.
pub fn store_path(config: &CollectorConfig) -> Vec<(&'static str, ComponentId)> {
    let mut path = Vec::new();
    for pipeline in config.service.pipelines.values() {
        if !pipeline.exporters.iter().any(|id| id.kind == "store") {
            continue;
        }
        for id in &pipeline.receivers {
            path.push(("receivers", id.clone()));
        }
        for id in &pipeline.processors {
            path.push(("processors", id.clone()));
        }
    }
    path.sort();
    path.dedup();
    path
}

/// Configures a pipeline to carry the tenant to the store: its receivers pass request headers
/// on, its `batch` and `tail_sampling` keep `X-Scope-OrgID` (one batch and one trace table
/// partition per tenant).
pub fn keep_tenant(config: &mut CollectorConfig) {
    for (section, id) in store_path(config) {
        if section == "receivers" {
            if let Some(receiver) = config.receivers.get_mut(&id) {
                include_request_metadata_of(receiver);
            }
        } else if HOLDING_PROCESSORS.contains(&id.kind.as_str()) {
            if let Some(processor) = config.processors.get_mut(&id) {
                add_tenant_key(processor);
            }
        }
    }
}

/// Adds `X-Scope-OrgID` to a processor's `metadata_keys` unless it is there.
fn add_tenant_key(processor: &mut Value) {
    if !processor.is_mapping() {
        // `batch:` with no settings is null.
        *processor = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = processor else {
        return;
    };
    let keys = map
        .entry(Value::from("metadata_keys"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if let Value::Sequence(keys) = keys {
        if !keys.iter().any(is_tenant_key) {
            keys.push(Value::from(TENANT_KEY_AS_WRITTEN));
        }
    }
}

fn is_tenant_key(key: &Value) -> bool {
    key.as_str()
        .is_some_and(|k| k.eq_ignore_ascii_case(TENANT_METADATA_KEY))
}

/// Sets `include_metadata: true` on every protocol of every receiver of a `receivers` mapping.
pub fn include_request_metadata(receivers: &mut Value) {
    if let Value::Mapping(receivers) = receivers {
        for (_, receiver) in receivers.iter_mut() {
            include_request_metadata_of(receiver);
        }
    }
}

/// `include_metadata: true` on every protocol of one receiver's config.
fn include_request_metadata_of(receiver: &mut Value) {
    let Some(Value::Mapping(protocols)) = receiver.get_mut("protocols") else {
        return;
    };
    for (_, protocol) in protocols.iter_mut() {
        if protocol.is_null() {
            // `grpc:` with no settings.
            *protocol = Value::Mapping(Default::default());
        }
        if let Value::Mapping(settings) = protocol {
            settings.insert(Value::from("include_metadata"), Value::from(true));
        }
    }
}

/// Every key of a pipeline that would lose the tenant before the store exporter, with what to set.
pub fn check_tenant_kept(config: &CollectorConfig) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (section, id) in store_path(config) {
        if section == "receivers" {
            let Some(Value::Mapping(protocols)) =
                config.receivers.get(&id).and_then(|r| r.get("protocols"))
            else {
                continue;
            };
            for (name, settings) in protocols {
                let included = settings
                    .get("include_metadata")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !included {
                    errors.push(ConfigError::new(
                        format!(
                            "receivers::{id}::protocols::{}::include_metadata",
                            name.as_str().unwrap_or("?")
                        ),
                        "must be true: without it the pipeline never sees X-Scope-OrgID",
                    ));
                }
            }
        } else if HOLDING_PROCESSORS.contains(&id.kind.as_str()) {
            let kept = config
                .processors
                .get(&id)
                .and_then(|p| p.get("metadata_keys"))
                .and_then(Value::as_sequence)
                .is_some_and(|keys| keys.iter().any(is_tenant_key));
            if !kept {
                errors.push(ConfigError::new(
                    format!("processors::{id}::metadata_keys"),
                    format!(
                        "must list X-Scope-OrgID: {} sends data on with only these client \
                         metadata keys, so the store would get no tenant",
                        id.kind
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}
