//! Tempo's tag endpoints: `/api/search/tags`, `/api/v2/search/tags`,
//! `/api/search/tag/{name}/values`, `/api/v2/search/tag/{name}/values`, over every trace of the
//! range asked (head and blocks), with `start`, `end`, `q`, `scope`, `limit` and
//! `maxStaleValues`.
//!
//! Shapes and parameters as grafana/tempo ad33aa8fafc41a4ea58519f7b7a88b1aa1383224 has them
//! (`pkg/api/search_tags.go`, `pkg/tempopb/tempo.proto`: `SearchTagsResponse`,
//! `SearchTagsV2Response`, `SearchTagValuesResponse`, `SearchTagValuesV2Response`,
//! `MetadataMetrics`).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use threadline_traceql::model::{Span, Trace};

use crate::api::{engine_error, error, tenant, ApiError};
use crate::attr_keys::{matcher_required_keys, KeyScope, RequiredKey};
use crate::engine::{SearchOptions, SearchRequest, SearchStats, Store};
use crate::search::Matcher;
use crate::tags::{self, Distinct, TagName, INTRINSICS};

#[derive(Debug, Default, Deserialize)]
pub struct TagParams {
    scope: Option<String>,
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    #[serde(rename = "maxStaleValues")]
    max_stale_values: Option<String>,
}

/// A tag request, parsed.
struct TagRequest {
    tenant: String,
    search: SearchRequest,
    /// Whole range asked: a block inside it is wholly in the answer.
    range: (u64, u64),
    /// The filter from `q`, or None (no `q`, `{}`, or a `q` that does not parse).
    filter: Option<Matcher>,
    /// Why `q` was ignored, when it was.
    ignored_query: Option<String>,
    limit: usize,
    max_stale: usize,
}

fn number(name: &str, value: &Option<String>) -> Result<u64, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid {name}: {v:?} is not a whole number"),
            )
        }),
    }
}

fn parse(store: &Store, headers: &HeaderMap, params: &TagParams) -> Result<TagRequest, ApiError> {
    let tenant = tenant(store, headers)?;
    let start = number("start", &params.start)?;
    let end = number("end", &params.end)?;
    if end != 0 && start > end {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid start: must not be after end",
        ));
    }
    let limit = number("limit", &params.limit)? as usize;
    let max_stale = number("maxStaleValues", &params.max_stale_values)? as usize;
    // As Tempo's lenient extraction: a `q` that does not parse (autocompletion sends the query
    // being typed) filters nothing; the answer says so in `metrics`.
    let (filter, ignored_query) = match params.q.as_deref().map(str::trim) {
        None | Some("") | Some("{}") => (None, None),
        Some(q) => match Matcher::parse(Some(q), None) {
            Ok(matcher) => (Some(matcher), None),
            Err(err) => (None, Some(err.to_string())),
        },
    };
    let range = (
        start.saturating_mul(1_000_000_000),
        if end == 0 {
            u64::MAX
        } else {
            end.saturating_mul(1_000_000_000)
                .saturating_add(999_999_999)
        },
    );
    let search = SearchRequest {
        start_unix_nano: (start != 0).then_some(range.0),
        end_unix_nano: (end != 0).then_some(range.1),
        limit: usize::MAX,
        service_hint: filter.as_ref().and_then(Matcher::service_hint),
        error_hint: filter.as_ref().is_some_and(Matcher::error_hint),
        ..SearchRequest::default()
    };
    Ok(TagRequest {
        tenant,
        search,
        range,
        filter,
        ignored_query,
        limit,
        max_stale,
    })
}

impl TagRequest {
    fn required_keys(&self) -> Vec<RequiredKey> {
        self.filter
            .as_ref()
            .map(matcher_required_keys)
            .unwrap_or_default()
    }

    /// Calls `visit` with each span of the range that passes `q`, and its trace.
    async fn scan(
        &self,
        store: &Store,
        options: &SearchOptions,
        visit: &(dyn Fn(&Trace, &Span) + Sync),
    ) -> Result<SearchStats, ApiError> {
        let matches = |trace: &Trace| {
            match &self.filter {
                None => trace.spans.iter().for_each(|span| visit(trace, span)),
                Some(matcher) => {
                    for m in matcher.matches(trace).unwrap_or_default() {
                        if let Some(span) = trace.spans.get(m.span) {
                            visit(trace, span);
                        }
                    }
                }
            }
            // Nothing is kept: the visit collected what it wanted.
            false
        };
        let (_, stats) = store
            .search_with(&self.tenant, &self.search, options, &matches, &|_| {})
            .await
            .map_err(engine_error)?;
        Ok(stats)
    }

    fn metrics(&self, stats: &SearchStats, store: &Store) -> Json {
        let block_bytes: u64 = store
            .block_metas()
            .iter()
            .filter(|m| m.tenant == self.tenant)
            .map(|m| m.size_bytes)
            .sum();
        let mut metrics = crate::api_search_metrics::metrics_json(stats);
        metrics["totalBlockBytes"] = json!(block_bytes.to_string());
        if let Some(reason) = &self.ignored_query {
            metrics["threadlineIgnoredQuery"] = json!(reason);
        }
        metrics
    }
}

/// Which scopes a tag-names request wants: Tempo's `scope` (empty or `none`: all).
fn wanted_scopes(scope: Option<&str>) -> Result<(Vec<KeyScope>, bool), ApiError> {
    match scope.map(str::trim).unwrap_or("") {
        "" | "none" | "all" => Ok((KeyScope::ALL.to_vec(), true)),
        "intrinsic" => Ok((Vec::new(), true)),
        other => match KeyScope::from_name(other) {
            Some(scope) => Ok((vec![scope], false)),
            None => Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid scope: {other} (expected span, resource, event, link, \
                     instrumentation, intrinsic or none)"
                ),
            )),
        },
    }
}

/// Attribute keys per scope over the request's range.
async fn collect_names(
    store: &Store,
    request: &TagRequest,
    scopes: &[KeyScope],
) -> Result<(Vec<Vec<String>>, SearchStats), ApiError> {
    if scopes.is_empty() {
        // `scope=intrinsic`: Tempo's fixed list, nothing to read.
        return Ok((Vec::new(), SearchStats::default()));
    }
    let collected: Vec<Mutex<Distinct<String>>> = scopes
        .iter()
        .map(|_| Mutex::new(Distinct::new(request.max_stale)))
        .collect();
    let mut options = SearchOptions {
        required_keys: request.required_keys(),
        ..SearchOptions::default()
    };
    // Without `q`, a block wholly inside the range gives its keys from its index: no page read.
    if request.filter.is_none() {
        for block in store.blocks(&request.tenant) {
            let inside = block.meta.start_unix_nano >= request.range.0
                && block.meta.end_unix_nano <= request.range.1;
            let Some(keys) = block.summary.keys().filter(|_| inside) else {
                continue;
            };
            for (i, scope) in scopes.iter().enumerate() {
                let mut names = lock(&collected[i]);
                keys.of_scope(*scope).for_each(|k| names.add(k.to_string()));
            }
            options.skip_blocks.insert(block.meta.block_id.clone());
        }
    }
    let visit = |_: &Trace, span: &Span| {
        for (i, scope) in scopes.iter().enumerate() {
            let mut names = lock(&collected[i]);
            for list in tags::attribute_lists(span, *scope) {
                for (key, _) in list {
                    names.add(key.clone());
                }
            }
        }
    };
    let stats = request.scan(store, &options, &visit).await?;
    let names = collected
        .into_iter()
        .map(|c| {
            c.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .into_vec(request.limit)
        })
        .collect();
    Ok((names, stats))
}

/// A poisoned lock only means a visit panicked; what it collected is still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub async fn tags_v1(
    State(store): State<Arc<Store>>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    let request = parse(&store, &headers, &params)?;
    let (scopes, intrinsic) = wanted_scopes(params.scope.as_deref())?;
    // Tempo's v1 lists intrinsics only for `scope=intrinsic`.
    let only_intrinsic = scopes.is_empty() && intrinsic;
    let (names, stats) = collect_names(&store, &request, &scopes).await?;
    let mut all: Vec<String> = names.into_iter().flatten().collect();
    if only_intrinsic {
        all.extend(INTRINSICS.iter().map(|s| s.to_string()));
    }
    all.sort();
    all.dedup();
    if request.limit > 0 {
        all.truncate(request.limit);
    }
    let metrics = request.metrics(&stats, &store);
    Ok(axum::Json(json!({ "tagNames": all, "metrics": metrics })))
}

pub async fn tags_v2(
    State(store): State<Arc<Store>>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    let request = parse(&store, &headers, &params)?;
    let (scopes, intrinsic) = wanted_scopes(params.scope.as_deref())?;
    let (names, stats) = collect_names(&store, &request, &scopes).await?;
    // Tempo lists the scopes that have tags, then the intrinsic scope.
    let mut out: Vec<Json> = scopes
        .iter()
        .zip(names)
        .filter(|(_, tags)| !tags.is_empty())
        .map(|(scope, tags)| json!({ "name": scope.name(), "tags": tags }))
        .collect();
    if intrinsic {
        let take = if request.limit == 0 {
            INTRINSICS.len()
        } else {
            request.limit
        };
        let intrinsics: Vec<&str> = INTRINSICS.iter().copied().take(take).collect();
        out.push(json!({ "name": "intrinsic", "tags": intrinsics }));
    }
    let metrics = request.metrics(&stats, &store);
    Ok(axum::Json(json!({ "scopes": out, "metrics": metrics })))
}

/// Typed values of `name` over the request's range.
async fn collect_values(
    store: &Store,
    request: &TagRequest,
    name: &TagName,
) -> Result<(Vec<(&'static str, String)>, SearchStats), ApiError> {
    let collected = Mutex::new(Distinct::new(request.max_stale));
    let mut options = SearchOptions {
        required_keys: request.required_keys(),
        ..SearchOptions::default()
    };
    // A value comes from a span with the attribute: blocks without its key are skipped.
    if let TagName::Attribute { scopes, key } = name {
        options.required_keys.push(RequiredKey {
            scopes: scopes.clone(),
            key: key.clone(),
            value: None,
        });
    }
    let visit = |trace: &Trace, span: &Span| {
        let mut values = lock(&collected);
        tags::span_values(trace, span, name, &mut |kind, value| {
            values.add((value, kind));
        });
    };
    let stats = request.scan(store, &options, &visit).await?;
    let values = collected
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_vec(request.limit)
        .into_iter()
        .map(|(value, kind)| (kind, value))
        .collect();
    Ok((values, stats))
}

pub async fn tag_values_v1(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    let request = parse(&store, &headers, &params)?;
    let (values, stats) = collect_values(&store, &request, &TagName::v1(&name)).await?;
    let mut all: Vec<String> = tags::virtual_values_v1(&name)
        .iter()
        .map(|v| v.to_string())
        .collect();
    for (_, value) in values {
        if !all.contains(&value) {
            all.push(value);
        }
    }
    if request.limit > 0 {
        all.truncate(request.limit);
    }
    let metrics = request.metrics(&stats, &store);
    Ok(axum::Json(json!({ "tagValues": all, "metrics": metrics })))
}

pub async fn tag_values_v2(
    State(store): State<Arc<Store>>,
    Path(name): Path<String>,
    Query(params): Query<TagParams>,
    headers: HeaderMap,
) -> Result<axum::Json<Json>, ApiError> {
    let request = parse(&store, &headers, &params)?;
    let tag = TagName::parse_v2(&name).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
    let (values, stats) = match tags::virtual_values_v2(&tag) {
        // Tempo answers these without reading data, and so do we.
        Some(mut values) => {
            if request.limit > 0 {
                values.truncate(request.limit);
            }
            (values, SearchStats::default())
        }
        None => collect_values(&store, &request, &tag).await?,
    };
    let values: Vec<Json> = values
        .into_iter()
        .map(|(kind, value)| json!({ "type": kind, "value": value }))
        .collect();
    let metrics = request.metrics(&stats, &store);
    Ok(axum::Json(
        json!({ "tagValues": values, "metrics": metrics }),
    ))
}
