//! Tempo's `meta.json` (`tempodb/backend/block_meta.go` at the pinned commit): which blocks are
//! Tempo's, in which format, and which attributes its dedicated columns hold.

use serde::Deserialize;

/// The formats this module reads.
pub const SUPPORTED_FORMATS: &[&str] = &["vParquet4"];

/// The fields of Tempo's block meta that an import uses (Tempo writes more).
#[derive(Debug, Clone, Deserialize)]
pub struct TempoMeta {
    /// `vParquet4` (Tempo's newer metas say `format`, older ones `version`).
    #[serde(default, alias = "version")]
    pub format: String,
    #[serde(rename = "blockID")]
    pub block_id: String,
    #[serde(rename = "tenantID", default)]
    pub tenant_id: String,
    #[serde(rename = "startTime", default)]
    pub start_time: String,
    #[serde(rename = "endTime", default)]
    pub end_time: String,
    #[serde(rename = "totalObjects", default)]
    pub total_objects: u64,
    #[serde(default)]
    pub size: u64,
    #[serde(rename = "dedicatedColumns", default)]
    pub dedicated_columns: Vec<DedicatedColumn>,
}

/// One entry of `dedicatedColumns`: Tempo omits the scope when it is `span` and the type when it
/// is `string`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DedicatedColumn {
    #[serde(rename = "s", default = "span_scope")]
    pub scope: String,
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "t", default = "string_type")]
    pub kind: String,
    #[serde(rename = "o", default)]
    pub options: Vec<String>,
}

fn span_scope() -> String {
    "span".to_string()
}

fn string_type() -> String {
    "string".to_string()
}

/// Attribute names of the spare columns `String01`..`String10` of one scope: index i names
/// what column i holds.
pub type DedicatedNames = [Option<String>; 10];

impl TempoMeta {
    /// Parses a `meta.json`; None if it is not a Tempo block this module reads (a Threadline
    /// block, another Tempo format, or not a meta at all).
    pub fn parse_supported(bytes: &[u8]) -> Option<TempoMeta> {
        let meta: TempoMeta = serde_json::from_slice(bytes).ok()?;
        meta.is_supported().then_some(meta)
    }

    /// Whether the block is in a format this module reads.
    pub fn is_supported(&self) -> bool {
        SUPPORTED_FORMATS.contains(&self.format.as_str())
    }

    /// The attribute each spare string column of `scope` ("resource" or "span") holds, assigned
    /// as Tempo's `dedicatedColumnsToColumnMapping` does: in order, skipping columns with
    /// options (vParquet4 has none for them) and types without spare columns (vParquet4 has
    /// only string ones).
    pub fn dedicated_names(&self, scope: &str) -> DedicatedNames {
        let mut names: DedicatedNames = Default::default();
        let assigned = self
            .dedicated_columns
            .iter()
            .filter(|c| c.scope == scope && c.kind == "string" && c.options.is_empty());
        for (slot, column) in names.iter_mut().zip(assigned) {
            *slot = Some(column.name.clone());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tempos_meta_and_assigns_dedicated_columns_in_order() {
        // The meta.json of the block in tempodb/encoding/vparquet4/test-data, as Tempo wrote it.
        let json = br#"{"format":"vParquet4","blockID":"b27b0e53-66a0-4505-afd6-434ae3cd4a10","minID":"AAAAAAAAAAAAR0votDRJ+w==","maxID":"AAAAAAAAAAD/+S7r9o+CMA==","tenantID":"single-tenant","startTime":"2022-07-04T11:11:09Z","endTime":"2022-07-04T11:11:35Z","totalObjects":134,"size":77187,"compactionLevel":0,"encoding":"none","indexPageSize":0,"totalRecords":1,"dataEncoding":"","bloomShards":1,"footerSize":17711,"dedicatedColumns":[{"s":"resource","n":"ip"},{"n":"instance"},{"n":"version"},{"n":"region"},{"n":"sampler.type"}]}"#;
        let meta = TempoMeta::parse_supported(json).expect("a vParquet4 meta");
        assert_eq!(meta.block_id, "b27b0e53-66a0-4505-afd6-434ae3cd4a10");
        assert_eq!(meta.tenant_id, "single-tenant");
        assert_eq!(meta.total_objects, 134);
        let resource = meta.dedicated_names("resource");
        assert_eq!(resource[0].as_deref(), Some("ip"));
        assert!(resource[1].is_none());
        let span = meta.dedicated_names("span");
        assert_eq!(span[0].as_deref(), Some("instance"));
        assert_eq!(span[3].as_deref(), Some("sampler.type"));
        assert!(span[4].is_none());
    }

    #[test]
    fn other_metas_are_not_tempo_blocks() {
        assert!(TempoMeta::parse_supported(br#"{"format":"vParquet2","blockID":"x"}"#).is_none());
        assert!(TempoMeta::parse_supported(br#"{"block_id":"x","tenant":"t"}"#).is_none());
        assert!(TempoMeta::parse_supported(b"not json").is_none());
    }
}
