//! `data.parquet` of a Tempo block to traces, one row group at a time: Tempo writes one row per
//! trace, sorted by trace id, so a row group is a bounded batch of whole traces. Rows are read
//! through the parquet crate's record API by column name (the names are schema.go's), so a
//! column Tempo adds later is ignored and one it drops reads as empty.

use bytes::Bytes;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use parquet::record::{Field, Row};
use prost::Message;
use threadline_otlp::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use threadline_otlp::TraceData;

use super::convert::{trace_to_otlp, Dedicated};
use super::model;
use super::schema as col;
use super::TempoBlockError;

/// An open `data.parquet`.
pub struct TempoBlockReader {
    file: SerializedFileReader<Bytes>,
    dedicated: Dedicated,
}

impl TempoBlockReader {
    pub fn new(data: Bytes, dedicated: Dedicated) -> Result<Self, TempoBlockError> {
        let file = SerializedFileReader::new(data).map_err(TempoBlockError::Parquet)?;
        Ok(TempoBlockReader { file, dedicated })
    }

    pub fn row_groups(&self) -> usize {
        self.file.metadata().num_row_groups()
    }

    /// The traces of row group `index`, in the block's order (by trace id). A trace that is
    /// not valid OTLP (ids of the wrong length) is left out and counted, as the receiver does.
    pub fn read_row_group(&self, index: usize) -> Result<RowGroupTraces, TempoBlockError> {
        let group = self
            .file
            .get_row_group(index)
            .map_err(|e| TempoBlockError::RowGroup(index, e))?;
        let mut out = RowGroupTraces::default();
        for row in group
            .get_row_iter(None)
            .map_err(|e| TempoBlockError::RowGroup(index, e))?
        {
            let row = row.map_err(|e| TempoBlockError::RowGroup(index, e))?;
            match trace_from_row(&row).and_then(|trace| self.to_trace_data(&trace)) {
                Ok((id, data, rejected_spans)) => {
                    out.rejected_spans += rejected_spans;
                    if !data.is_empty() {
                        out.traces.push((id, data));
                    }
                }
                Err(err) => out.rejected.push(err.to_string()),
            }
        }
        Ok(out)
    }

    /// The trace with id `trace_id`, reading only the row groups whose TraceID min/max admit it.
    pub fn find_trace(&self, trace_id: &[u8; 16]) -> Result<Option<TraceData>, TempoBlockError> {
        let metadata = self.file.metadata();
        for index in 0..metadata.num_row_groups() {
            let group = metadata.row_group(index);
            let admitted = match group.column(0).statistics() {
                Some(Statistics::ByteArray(stats)) => {
                    let below = stats
                        .min_opt()
                        .is_some_and(|min| trace_id[..] < *min.data());
                    let above = stats
                        .max_opt()
                        .is_some_and(|max| trace_id[..] > *max.data());
                    !(below || above)
                }
                _ => true,
            };
            if !admitted {
                continue;
            }
            let rows = self
                .file
                .get_row_group(index)
                .map_err(TempoBlockError::Parquet)?;
            for row in rows.get_row_iter(None).map_err(TempoBlockError::Parquet)? {
                let row = row.map_err(TempoBlockError::Parquet)?;
                if bytes_of(get(&row, col::TRACE_ID)) == trace_id[..] {
                    let trace = trace_from_row(&row)?;
                    return Ok(Some(self.to_trace_data(&trace)?.1));
                }
            }
        }
        Ok(None)
    }

    /// The trace as OTLP, validated as the receiver validates what it is sent (ids 16 and 8
    /// bytes); spans with all-zero ids are dropped and counted.
    fn to_trace_data(
        &self,
        trace: &model::Trace,
    ) -> Result<([u8; 16], TraceData, u64), TempoBlockError> {
        let id: [u8; 16] = trace
            .trace_id
            .as_slice()
            .try_into()
            .map_err(|_| TempoBlockError::BadTraceId(hex::encode(&trace.trace_id)))?;
        let request = ExportTraceServiceRequest {
            resource_spans: trace_to_otlp(trace, &self.dedicated),
        };
        let (data, rejected) = TraceData::from_request_bytes(Bytes::from(request.encode_to_vec()))
            .map_err(|e| TempoBlockError::InvalidTrace(hex::encode(id), e.to_string()))?;
        Ok((id, data, rejected.spans))
    }
}

/// What one row group of a Tempo block holds, as OTLP.
#[derive(Debug, Default)]
pub struct RowGroupTraces {
    pub traces: Vec<([u8; 16], TraceData)>,
    /// Why each trace that is no valid OTLP was left out.
    pub rejected: Vec<String>,
    /// Spans left out for all-zero ids.
    pub rejected_spans: u64,
}

/// One row of Tempo's schema into its model.
pub fn trace_from_row(row: &Row) -> Result<model::Trace, TempoBlockError> {
    let trace_id = bytes_of(get(row, col::TRACE_ID));
    if trace_id.is_empty() {
        return Err(TempoBlockError::BadTraceId(String::new()));
    }
    Ok(model::Trace {
        trace_id,
        resource_spans: groups(get(row, col::RESOURCE_SPANS))
            .map(resource_spans)
            .collect(),
    })
}

fn resource_spans(row: &Row) -> model::ResourceSpans {
    let r = group(get(row, col::RESOURCE));
    let resource = r
        .map(|r| model::Resource {
            attrs: attributes(get(r, col::ATTRS)),
            dropped_attributes_count: int(get(r, col::DROPPED_ATTRIBUTES_COUNT)) as i32,
            service_name: string(get(r, col::SERVICE_NAME)),
            cluster: opt_string(get(r, col::CLUSTER)),
            namespace: opt_string(get(r, col::NAMESPACE)),
            pod: opt_string(get(r, col::POD)),
            container: opt_string(get(r, col::CONTAINER)),
            k8s_cluster_name: opt_string(get(r, col::K8S_CLUSTER_NAME)),
            k8s_namespace_name: opt_string(get(r, col::K8S_NAMESPACE_NAME)),
            k8s_pod_name: opt_string(get(r, col::K8S_POD_NAME)),
            k8s_container_name: opt_string(get(r, col::K8S_CONTAINER_NAME)),
            dedicated: dedicated(get(r, col::DEDICATED_ATTRIBUTES)),
        })
        .unwrap_or_default();
    model::ResourceSpans {
        resource,
        scope_spans: groups(get(row, col::SCOPE_SPANS))
            .map(|ss| model::ScopeSpans {
                scope: group(get(ss, col::SCOPE))
                    .map(|s| model::Scope {
                        name: string(get(s, col::NAME)),
                        version: string(get(s, col::VERSION)),
                        attrs: attributes(get(s, col::ATTRS)),
                        dropped_attributes_count: int(get(s, col::DROPPED_ATTRIBUTES_COUNT)) as i32,
                    })
                    .unwrap_or_default(),
                spans: groups(get(ss, col::SPANS)).map(span).collect(),
            })
            .collect(),
    }
}

fn span(s: &Row) -> model::Span {
    model::Span {
        span_id: bytes_of(get(s, col::SPAN_ID)),
        parent_span_id: bytes_of(get(s, col::PARENT_SPAN_ID)),
        name: string(get(s, col::NAME)),
        kind: int(get(s, col::KIND)),
        trace_state: string(get(s, col::TRACE_STATE)),
        start_time_unix_nano: int(get(s, col::START_TIME_UNIX_NANO)) as u64,
        duration_nano: int(get(s, col::DURATION_NANO)) as u64,
        status_code: int(get(s, col::STATUS_CODE)),
        status_message: string(get(s, col::STATUS_MESSAGE)),
        attrs: attributes(get(s, col::ATTRS)),
        dropped_attributes_count: int(get(s, col::DROPPED_ATTRIBUTES_COUNT)) as i32,
        events: groups(get(s, col::EVENTS))
            .map(|e| model::Event {
                time_since_start_nano: int(get(e, col::TIME_SINCE_START_NANO)) as u64,
                name: string(get(e, col::NAME)),
                attrs: attributes(get(e, col::ATTRS)),
                dropped_attributes_count: int(get(e, col::DROPPED_ATTRIBUTES_COUNT)) as i32,
            })
            .collect(),
        dropped_events_count: int(get(s, col::DROPPED_EVENTS_COUNT)) as i32,
        links: groups(get(s, col::LINKS))
            .map(|l| model::Link {
                trace_id: bytes_of(get(l, col::TRACE_ID)),
                span_id: bytes_of(get(l, col::SPAN_ID)),
                trace_state: string(get(l, col::TRACE_STATE)),
                attrs: attributes(get(l, col::ATTRS)),
                dropped_attributes_count: int(get(l, col::DROPPED_ATTRIBUTES_COUNT)) as i32,
            })
            .collect(),
        dropped_links_count: int(get(s, col::DROPPED_LINKS_COUNT)) as i32,
        http_method: opt_string(get(s, col::HTTP_METHOD)),
        http_url: opt_string(get(s, col::HTTP_URL)),
        http_status_code: match get(s, col::HTTP_STATUS_CODE) {
            None | Some(Field::Null) => None,
            field => Some(int(field)),
        },
        dedicated: dedicated(get(s, col::DEDICATED_ATTRIBUTES)),
    }
}

fn attributes(field: Option<&Field>) -> Vec<model::Attribute> {
    groups(field)
        .map(|a| model::Attribute {
            key: string(get(a, col::KEY)),
            is_array: matches!(get(a, col::IS_ARRAY), Some(Field::Bool(true))),
            value: list(get(a, col::VALUE)).map(|f| string(Some(f))).collect(),
            value_int: list(get(a, col::VALUE_INT)).map(|f| int(Some(f))).collect(),
            value_double: list(get(a, col::VALUE_DOUBLE))
                .map(|f| match f {
                    Field::Double(d) => *d,
                    Field::Float(f) => f64::from(*f),
                    other => int(Some(other)) as f64,
                })
                .collect(),
            value_bool: list(get(a, col::VALUE_BOOL))
                .map(|f| matches!(f, Field::Bool(true)))
                .collect(),
            value_unsupported: opt_string(get(a, col::VALUE_UNSUPPORTED)),
        })
        .collect()
}

fn dedicated(field: Option<&Field>) -> model::DedicatedAttributes {
    let mut values: model::DedicatedAttributes = Default::default();
    if let Some(row) = group(field) {
        for (slot, name) in values.iter_mut().zip(col::DEDICATED_STRING_COLUMNS) {
            *slot = opt_string(get(row, name));
        }
    }
    values
}

fn get<'a>(row: &'a Row, name: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, f)| f)
}

fn group(field: Option<&Field>) -> Option<&Row> {
    match field {
        Some(Field::Group(row)) => Some(row),
        _ => None,
    }
}

/// The elements of a LIST column (none when null).
fn list(field: Option<&Field>) -> impl Iterator<Item = &Field> {
    let elements: &[Field] = match field {
        Some(Field::ListInternal(list)) => list.elements(),
        _ => &[],
    };
    elements.iter()
}

/// The struct elements of a LIST column.
fn groups(field: Option<&Field>) -> impl Iterator<Item = &Row> {
    list(field).filter_map(|f| group(Some(f)))
}

fn string(field: Option<&Field>) -> String {
    opt_string(field).unwrap_or_default()
}

fn opt_string(field: Option<&Field>) -> Option<String> {
    match field {
        Some(Field::Str(s)) => Some(s.clone()),
        Some(Field::Bytes(b)) => Some(String::from_utf8_lossy(b.data()).into_owned()),
        _ => None,
    }
}

fn bytes_of(field: Option<&Field>) -> Vec<u8> {
    match field {
        Some(Field::Bytes(b)) => b.data().to_vec(),
        Some(Field::Str(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// Any integer column as i64 (Tempo writes Go `int`, `int32`, `uint32` and `uint64`; a u64
/// above i64::MAX wraps and the callers that want u64 cast it back).
fn int(field: Option<&Field>) -> i64 {
    match field {
        Some(Field::Byte(v)) => i64::from(*v),
        Some(Field::Short(v)) => i64::from(*v),
        Some(Field::Int(v)) => i64::from(*v),
        Some(Field::Long(v)) => *v,
        Some(Field::UByte(v)) => i64::from(*v),
        Some(Field::UShort(v)) => i64::from(*v),
        Some(Field::UInt(v)) => i64::from(*v),
        Some(Field::ULong(v)) => *v as i64,
        _ => 0,
    }
}
