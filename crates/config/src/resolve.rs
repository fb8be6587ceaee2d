//! Reading `--config` sources, merging them and applying `--set`, as upstream's `confmap`
//! resolver does.

use serde_yaml_ng::{Mapping, Value};

use crate::expand::{self, EnvLookup};
use crate::{ConfigError, ConfigErrors};

/// Where the configuration comes from, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// `--config` values in order: a file path, `file:PATH`, `env:VAR` or `yaml:INLINE`.
    /// Later sources override earlier ones.
    pub configs: Vec<String>,
    /// `--set key1::key2=value` values in order, applied after every `--config`.
    pub sets: Vec<String>,
}

/// Resolves `sources` into one YAML tree: every `--config` merged in order (maps merged deeply,
/// later values win, lists replaced), every `--set` applied, `${...}` references expanded from
/// the process environment and files, and `$$` turned into `$`.
pub fn resolve(sources: &ConfigSources) -> Result<Value, ConfigErrors> {
    resolve_with_env(sources, &|name: &str| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })
}

/// [`resolve`] reading environment variables through `env` instead of the process environment.
pub fn resolve_with_env(
    sources: &ConfigSources,
    env: EnvLookup<'_>,
) -> Result<Value, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    if sources.configs.is_empty() {
        errors.push(ConfigError::new(
            "--config",
            "no configuration given: pass at least one --config (a file path, file:PATH, env:VAR \
             or yaml:INLINE)",
        ));
    }

    let mut root = Value::Mapping(Mapping::new());
    for uri in &sources.configs {
        match retrieve_source(uri, env) {
            Ok(source) => merge(&mut root, unflatten_top_level(source)),
            Err(message) => errors.push(ConfigError::new(
                format!("--config {}", shorten(uri)),
                message,
            )),
        }
    }
    for set in &sources.sets {
        match parse_set(set) {
            Ok(overlay) => merge(&mut root, overlay),
            Err(message) => {
                errors.push(ConfigError::new(format!("--set {}", shorten(set)), message))
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    errors.extend(expand::expand_tree(&mut root, env));
    expand::unescape_dollars(&mut root);
    errors.into_result(root)
}

/// Long inline sources (a whole `yaml:` document) are cut in error paths.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.chars().count() > MAX || first_line.len() < text.len() {
        let cut: String = first_line.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        text.to_string()
    }
}

/// The scheme of a `--config` value, or `None` for a plain file path.
fn scheme_of(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    // Upstream: a scheme has at least two characters, so `C:\config.yaml` is a path.
    let valid = scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    valid.then_some((scheme, rest))
}

/// Reads one `--config` source into a YAML mapping.
fn retrieve_source(uri: &str, env: EnvLookup<'_>) -> Result<Value, String> {
    let (scheme, opaque) = scheme_of(uri).unwrap_or(("file", uri));
    let value = match scheme {
        "file" => {
            let text = std::fs::read_to_string(opaque)
                .map_err(|e| format!("cannot read file {opaque:?}: {e}"))?;
            parse_yaml_document(&text)?
        }
        "yaml" => parse_yaml_document(opaque)?,
        "env" => {
            let text = expand::lookup_env(opaque, env)?
                .ok_or_else(|| format!("environment variable {opaque:?} is not set"))?;
            parse_yaml_document(&text)?
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?}: supported schemes are file, env and yaml (or a \
                 plain file path)"
            ))
        }
    };
    match value {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(value),
        other => Err(format!(
            "the configuration must be a YAML map at the top level, got {}",
            kind_of(&other)
        )),
    }
}

fn parse_yaml_document(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))
}

pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Top-level keys written as `a::b::c` are nested maps, as upstream reads them (this is what
/// makes `yaml:processors::batch::timeout: 2s` work).
fn unflatten_top_level(source: Value) -> Value {
    let Value::Mapping(map) = source else {
        return source;
    };
    let mut out = Value::Mapping(Mapping::new());
    for (key, value) in map {
        let overlay = match key.as_str() {
            Some(text) if text.contains("::") => nest(text.split("::"), value),
            _ => {
                let mut single = Mapping::new();
                single.insert(key, value);
                Value::Mapping(single)
            }
        };
        merge(&mut out, overlay);
    }
    out
}

/// `["a", "b"]`, `v` -> `{a: {b: v}}`.
fn nest<'a>(keys: impl IntoIterator<Item = &'a str>, value: Value) -> Value {
    let keys: Vec<&str> = keys.into_iter().collect();
    keys.into_iter().rev().fold(value, |inner, key| {
        let mut map = Mapping::new();
        map.insert(Value::String(key.to_string()), inner);
        Value::Mapping(map)
    })
}

/// Merges `overlay` into `base`: maps are merged key by key, anything else in `overlay`
/// (scalars, lists, null) replaces what `base` had.
pub(crate) fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing @ Value::Mapping(_)) if value.is_mapping() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// `--set processors::batch::timeout=2s` -> `{processors: {batch: {timeout: "2s"}}}`.
/// The value is parsed as YAML, so `=10` is a number and `=[a, b]` a list.
fn parse_set(arg: &str) -> Result<Value, String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| {
        "missing equal sign: expected KEY=VALUE, e.g. processors::batch::timeout=2s".to_string()
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err("missing key before '='".to_string());
    }
    let segments: Vec<&str> = key.split("::").map(str::trim).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "empty key segment in {key:?}: nested keys are joined with \"::\", e.g. \
             processors::batch::timeout"
        ));
    }
    let value = value.trim();
    let value = if value.is_empty() {
        Value::Null
    } else {
        serde_yaml_ng::from_str(value)
            .map_err(|e| format!("value {value:?} is not valid YAML: {e}"))?
    };
    Ok(nest(segments, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn merge_is_deep_for_maps_and_replaces_everything_else() {
        let mut base = yaml("a: {b: 1, c: [1, 2], d: {e: x}}\nf: 1");
        merge(&mut base, yaml("a: {c: [3], d: {g: y}}\nf: {now: map}"));
        assert_eq!(
            base,
            yaml("a: {b: 1, c: [3], d: {e: x, g: y}}\nf: {now: map}")
        );
    }

    #[test]
    fn set_values_are_yaml_and_keys_nest() {
        assert_eq!(parse_set("a::b=10").unwrap(), yaml("a: {b: 10}"));
        assert_eq!(parse_set("a::b = [x, y]").unwrap(), yaml("a: {b: [x, y]}"));
        assert_eq!(
            parse_set("exporters::otlp/x::endpoint=h:4317").unwrap(),
            yaml("exporters: {otlp/x: {endpoint: 'h:4317'}}")
        );
        assert_eq!(parse_set("a=").unwrap(), yaml("a: null"));
        assert!(parse_set("a").unwrap_err().contains("missing equal sign"));
        assert!(parse_set("a::::b=1")
            .unwrap_err()
            .contains("empty key segment"));
        assert!(parse_set("=1").unwrap_err().contains("missing key"));
    }

    #[test]
    fn schemes_and_plain_paths() {
        assert_eq!(scheme_of("file:/x.yaml"), Some(("file", "/x.yaml")));
        assert_eq!(scheme_of("yaml:a: b"), Some(("yaml", "a: b")));
        assert_eq!(scheme_of("/etc/otel/config.yaml"), None);
        assert_eq!(scheme_of("C:\\otel\\config.yaml"), None);
        assert_eq!(scheme_of("./dir:x/config.yaml"), None);
    }

    #[test]
    fn top_level_double_colon_keys_nest() {
        let value = unflatten_top_level(yaml(
            "processors::batch::timeout: 2s\nprocessors: {batch: {send_batch_size: 5}}",
        ));
        assert_eq!(
            value,
            yaml("processors: {batch: {timeout: 2s, send_batch_size: 5}}")
        );
    }
}
