//! The web UI, served by `store` and `all-in-one` on the API's port: static files compiled into
//! the binary (no Node.js, CDN or network at run time). `/` is the single page; `/ui/<file>` are
//! its modules and styles. Every asset carries an ETag (a hash of its bytes) and `no-cache`, so
//! browsers revalidate with a cheap 304 and never run a stale UI after an upgrade.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::engine::Store;

/// The UI's files: (path under `crates/store/ui`, content type, bytes).
macro_rules! assets {
    ($($path:literal => $kind:literal),* $(,)?) => {
        &[$(($path, $kind, include_bytes!(concat!("../ui/", $path)) as &[u8])),*]
    };
}

const ASSETS: &[(&str, &str, &[u8])] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "js/app.js" => "text/javascript; charset=utf-8",
    "js/api.js" => "text/javascript; charset=utf-8",
    "js/dom.js" => "text/javascript; charset=utf-8",
    "js/format.js" => "text/javascript; charset=utf-8",
    "js/search.js" => "text/javascript; charset=utf-8",
    "js/editor.js" => "text/javascript; charset=utf-8",
    "js/trace_model.js" => "text/javascript; charset=utf-8",
    "js/critical_path.js" => "text/javascript; charset=utf-8",
    "js/trace_view.js" => "text/javascript; charset=utf-8",
    "js/span_detail.js" => "text/javascript; charset=utf-8",
    "js/compare.js" => "text/javascript; charset=utf-8",
    "js/service_map.js" => "text/javascript; charset=utf-8",
    "js/insight.js" => "text/javascript; charset=utf-8",
    "js/settings.js" => "text/javascript; charset=utf-8",
    "js/health.js" => "text/javascript; charset=utf-8",
};

/// The UI's routes and the Threadline endpoint only it needs (`what-is-different`), to merge
/// into the API's router before its state is given.
pub fn router() -> Router<Arc<Store>> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
        .merge(crate::api_insight::router())
}

/// FNV-1a of each asset, computed once: a strong validator for the ETag.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                format!("\"{hash:016x}\"")
            })
            .collect()
    })
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|(p, _, _)| *p == path) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no UI file {path:?}: open http://<this address>/ for the UI"),
        )
            .into_response();
    };
    let (_, kind, bytes) = ASSETS[index];
    let etag = &etags()[index];
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mut response = (cache, bytes).into_response();
    if let Ok(value) = kind.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_revalidates_by_etag() {
        for (path, kind, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{path} is empty");
            let response = serve(path, &HeaderMap::new());
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], *kind, "{path}");
            let etag = response.headers()[header::ETAG].clone();
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, etag);
            assert_eq!(serve(path, &again).status(), StatusCode::NOT_MODIFIED);
        }
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
