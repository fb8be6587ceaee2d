//! `${...}` references in configuration values, expanded as upstream's `confmap` does:
//! - `${env:VAR}`, `${env:VAR:-default}` and the `${VAR}` shorthand read environment variables;
//!   `${VAR:-default}` is accepted too;
//! - `${file:PATH}` reads a file and `${yaml:...}` inline YAML;
//! - a reference that is the whole value is replaced by the typed YAML it holds (a number, a map,
//!   ...), one inside a longer string is replaced by its text;
//! - expanded text is expanded again, so references may nest (`${env:${env:WHICH}}`);
//! - `$${...}` is an escaped, literal `${...}`, and finally every `$$` becomes `$`.
//!
//! Unlike upstream, an escaped reference does not stop later references in the same string from
//! being expanded (upstream's `findURI` gives up at the first escaped one).

use std::ops::Range;

use serde_yaml_ng::Value;

use crate::resolve::kind_of;
use crate::{join_path, ConfigError};

/// Looks an environment variable up: `None` when it is not set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Guards against references that expand to themselves.
const MAX_EXPANSIONS: usize = 1000;

const ENV_NAME_PATTERN: &str = "^[a-zA-Z_][a-zA-Z0-9_]*$";

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What `env:NAME[:-default]` found.
pub(crate) enum EnvValue {
    Set(String),
    Default(String),
    Unset,
}

impl EnvValue {
    /// The text, whether the variable or its default; `None` when neither exists.
    pub(crate) fn text(self) -> Option<String> {
        match self {
            EnvValue::Set(text) | EnvValue::Default(text) => Some(text),
            EnvValue::Unset => None,
        }
    }
}

/// Looks up `NAME` or `NAME:-default`.
pub(crate) fn lookup_env_value(selector: &str, env: EnvLookup<'_>) -> Result<EnvValue, String> {
    let (name, default) = match selector.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (selector, None),
    };
    if !is_env_name(name) {
        return Err(format!(
            "environment variable {name:?} has an invalid name: it must match {ENV_NAME_PATTERN}"
        ));
    }
    Ok(match (env(name), default) {
        (Some(value), _) => EnvValue::Set(value),
        (None, Some(default)) => EnvValue::Default(default.to_string()),
        (None, None) => EnvValue::Unset,
    })
}

/// Like [`lookup_env_value`], for a `--config env:VAR` source.
pub(crate) fn lookup_env(selector: &str, env: EnvLookup<'_>) -> Result<Option<String>, String> {
    lookup_env_value(selector, env).map(EnvValue::text)
}

/// What a reference resolved to: the typed value and the text it came from.
struct Retrieved {
    value: Value,
    text: String,
}

impl Retrieved {
    /// Reads `text` as YAML, keeping the type only where that is unambiguous: maps, lists,
    /// `true`/`false` and numbers written canonically (`8080`, `1.5`). Anything else stays the
    /// original text, so `"1.10"` or `"0123"` reach a string field unchanged (upstream keeps the
    /// original text for string fields too).
    fn from_text(text: String) -> Retrieved {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            // Upstream: an empty value is null, e.g. a variable set to "".
            return Retrieved {
                value: Value::Null,
                text,
            };
        }
        let value = match serde_yaml_ng::from_str::<Value>(&text) {
            Ok(value @ (Value::Mapping(_) | Value::Sequence(_))) => value,
            Ok(Value::Bool(b)) if trimmed == b.to_string() => Value::Bool(b),
            Ok(Value::Number(n)) if trimmed == n.to_string() => Value::Number(n),
            Ok(Value::Null) if matches!(trimmed, "null" | "~") => Value::Null,
            Ok(Value::String(s)) if s == trimmed => Value::String(s),
            _ => Value::String(text.clone()),
        };
        Retrieved { value, text }
    }

    /// The text to put in place of a reference inside a longer string.
    fn embeddable_text(self, reference: &str) -> Result<String, String> {
        match self.value {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s),
            Value::Bool(_) | Value::Number(_) => Ok(self.text.trim().to_string()),
            other => Err(format!(
                "cannot expand {reference} inside a string: it holds {}; a map or list can only \
                 be the whole value",
                kind_of(&other)
            )),
        }
    }
}

/// Expands every reference in the values of `root`, returning one error per value that failed.
pub(crate) fn expand_tree(root: &mut Value, env: EnvLookup<'_>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    expand_at(root, "", env, &mut errors, 0);
    errors
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind_of(other).to_string(),
    }
}

fn expand_at(
    value: &mut Value,
    path: &str,
    env: EnvLookup<'_>,
    errors: &mut Vec<ConfigError>,
    depth: usize,
) {
    match value {
        Value::String(text) => {
            if !(text.contains("${") && text.contains('}')) {
                return;
            }
            if depth > MAX_EXPANSIONS {
                errors.push(ConfigError::new(path, too_many_expansions()));
                return;
            }
            match expand_string(text, env) {
                Ok(Some(expanded)) => {
                    *value = expanded;
                    // A reference may bring in a map or list holding more references.
                    if value.is_mapping() || value.is_sequence() {
                        expand_at(value, path, env, errors, depth + 1);
                    }
                }
                Ok(None) => {}
                Err(message) => errors.push(ConfigError::new(path, message)),
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_at(item, &format!("{path}[{index}]"), env, errors, depth);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                expand_at(item, &join_path(path, &key_text(key)), env, errors, depth);
            }
        }
        Value::Tagged(tagged) => expand_at(&mut tagged.value, path, env, errors, depth),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn too_many_expansions() -> String {
    format!(
        "too many recursive expansions (more than {MAX_EXPANSIONS}): a reference probably expands \
         to itself"
    )
}

/// Expands the references in `text` until none are left; `None` when there were none.
fn expand_string(text: &str, env: EnvLookup<'_>) -> Result<Option<Value>, String> {
    let mut current = text.to_string();
    let mut changed = false;
    for _ in 0..MAX_EXPANSIONS {
        let Some(range) = find_reference(&current) else {
            return Ok(changed.then_some(Value::String(current)));
        };
        changed = true;
        let reference = current[range.clone()].to_string();
        let retrieved = retrieve(&reference, env)?;
        if range.start == 0 && range.end == current.len() {
            // The whole value is one reference: it takes the referenced value's type.
            match retrieved.value {
                Value::String(s) => current = s,
                other => return Ok(Some(other)),
            }
        } else {
            let replacement = retrieved.embeddable_text(&reference)?;
            current.replace_range(range, &replacement);
        }
    }
    Err(too_many_expansions())
}

/// The first unescaped `${...}` in `text`; for nested references, the innermost.
///
/// As upstream: take the first `}` and the last `${` before it; a `${` preceded by an odd
/// number of `$` is escaped.
fn find_reference(text: &str) -> Option<Range<usize>> {
    let mut base = 0;
    loop {
        let close = base + text[base..].find('}')?;
        if let Some(open) = text[base..close].rfind("${").map(|i| base + i) {
            let dollars_before = text[base..open]
                .bytes()
                .rev()
                .take_while(|&b| b == b'$')
                .count();
            if dollars_before % 2 == 0 {
                return Some(open..close + 1);
            }
        }
        base = close + 1;
    }
}

/// Splits the inside of `${...}` into scheme and selector.
fn split_reference<'a>(reference: &str, inner: &'a str) -> Result<(&'a str, &'a str), String> {
    let Some((head, rest)) = inner.split_once(':') else {
        // `${VAR}`: env is the default scheme.
        return Ok(("env", inner));
    };
    if matches!(head, "env" | "file" | "yaml") {
        return Ok((head, rest));
    }
    if rest.starts_with('-') && is_env_name(head) {
        // `${VAR:-default}`.
        return Ok(("env", inner));
    }
    let valid_scheme = head.len() >= 2
        && head.starts_with(|c: char| c.is_ascii_alphabetic())
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    if valid_scheme {
        Err(format!(
            "cannot expand {reference}: unsupported scheme {head:?}; supported schemes are env, \
             file and yaml"
        ))
    } else {
        Err(format!(
            "cannot expand {reference}: invalid reference; expected ${{env:NAME}}, \
             ${{env:NAME:-default}}, ${{NAME}}, ${{file:PATH}} or ${{yaml:...}}"
        ))
    }
}

fn retrieve(reference: &str, env: EnvLookup<'_>) -> Result<Retrieved, String> {
    let inner = &reference[2..reference.len() - 1];
    let (scheme, selector) = split_reference(reference, inner)?;
    if selector.contains('$') {
        return Err(format!(
            "cannot expand {reference}: '$' is not supported inside a reference"
        ));
    }
    match scheme {
        "env" => {
            let found = lookup_env_value(selector, env)
                .map_err(|e| format!("cannot expand {reference}: {e}"))?;
            Ok(match found {
                EnvValue::Set(text) => Retrieved::from_text(text),
                // An explicit empty default is the empty string, not null (as upstream).
                EnvValue::Default(text) if text.is_empty() => Retrieved {
                    value: Value::String(String::new()),
                    text,
                },
                EnvValue::Default(text) => Retrieved::from_text(text),
                EnvValue::Unset => Retrieved {
                    value: Value::Null,
                    text: String::new(),
                },
            })
        }
        "file" => {
            let mut text = std::fs::read_to_string(selector).map_err(|e| {
                format!("cannot expand {reference}: cannot read file {selector:?}: {e}")
            })?;
            // A secret file usually ends with a newline that is not part of the secret.
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(Retrieved::from_text(text))
        }
        _ => Ok(Retrieved::from_text(selector.to_string())),
    }
}

/// Replaces `$$` with `$` in every string value (upstream does this after expansion).
pub(crate) fn unescape_dollars(value: &mut Value) {
    match value {
        Value::String(text) => {
            if text.contains("$$") {
                *text = text.replace("$$", "$");
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(unescape_dollars),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, item)| unescape_dollars(item)),
        Value::Tagged(tagged) => unescape_dollars(&mut tagged.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn expand(text: &str, vars: &[(&str, &str)]) -> Result<Value, Vec<ConfigError>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        let mut value = Value::String(text.to_string());
        let errors = expand_tree(&mut value, &lookup);
        unescape_dollars(&mut value);
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(errors)
        }
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    #[test]
    fn finds_innermost_unescaped_reference() {
        assert_eq!(find_reference("a ${env:X} b"), Some(2..10));
        assert_eq!(find_reference("${env:${env:X}}"), Some(6..14));
        assert_eq!(find_reference("$${env:X}"), None);
        assert_eq!(find_reference("$$${env:X}"), Some(2..10));
        assert_eq!(find_reference("$${env:X} ${env:Y}"), Some(10..18));
        assert_eq!(find_reference("no refs } here"), None);
    }

    #[test]
    fn env_forms() {
        let vars = [("HOST", "gw"), ("PORT", "4317"), ("EMPTY", "")];
        assert_eq!(
            expand("${env:HOST}:${env:PORT}", &vars).unwrap(),
            s("gw:4317")
        );
        assert_eq!(expand("${HOST}", &vars).unwrap(), s("gw"));
        assert_eq!(
            expand("${env:PORT}", &vars).unwrap(),
            Value::Number(4317.into())
        );
        assert_eq!(
            expand("${env:NOPE:-fallback}", &vars).unwrap(),
            s("fallback")
        );
        assert_eq!(expand("${NOPE:-fallback}", &vars).unwrap(), s("fallback"));
        assert_eq!(expand("${env:NOPE:-}", &vars).unwrap(), s(""));
        assert_eq!(expand("${env:NOPE}", &vars).unwrap(), Value::Null);
        assert_eq!(expand("${env:EMPTY}", &vars).unwrap(), Value::Null);
        assert_eq!(expand("x${env:NOPE}y", &vars).unwrap(), s("xy"));
        assert_eq!(expand("${env:HOST:-other}", &vars).unwrap(), s("gw"));
    }

    #[test]
    fn escapes() {
        let vars = [("A", "1")];
        assert_eq!(expand("$${env:A}", &vars).unwrap(), s("${env:A}"));
        assert_eq!(expand("$$${env:A}", &vars).unwrap(), s("$1"));
        assert_eq!(
            expand("$${env:A} ${env:A}", &vars).unwrap(),
            s("${env:A} 1")
        );
        assert_eq!(expand("pa$$word", &vars).unwrap(), s("pa$word"));
        assert_eq!(expand("cost: $5", &vars).unwrap(), s("cost: $5"));
    }

    #[test]
    fn typed_values_keep_text_when_ambiguous() {
        let vars = [
            ("V", "1.10"),
            ("Z", "0123"),
            ("B", "true"),
            ("L", "[a, b]"),
            ("Q", "\"x\""),
        ];
        assert_eq!(expand("${V}", &vars).unwrap(), s("1.10"));
        assert_eq!(expand("${Z}", &vars).unwrap(), s("0123"));
        assert_eq!(expand("${B}", &vars).unwrap(), Value::Bool(true));
        assert_eq!(
            expand("${L}", &vars).unwrap(),
            serde_yaml_ng::from_str::<Value>("[a, b]").unwrap()
        );
        assert_eq!(expand("${Q}", &vars).unwrap(), s("\"x\""));
    }

    #[test]
    fn nested_and_recursive_references() {
        let vars = [
            ("WHICH", "HOST"),
            ("HOST", "gw"),
            ("INDIRECT", "${env:HOST}:1"),
        ];
        assert_eq!(expand("${env:${env:WHICH}}", &vars).unwrap(), s("gw"));
        assert_eq!(expand("${INDIRECT}", &vars).unwrap(), s("gw:1"));
        let errors = expand("${SELF}", &[("SELF", "${SELF}")]).unwrap_err();
        assert!(errors[0].message.contains("too many recursive expansions"));
    }

    #[test]
    fn reference_errors_are_clear() {
        let err = |text: &str| expand(text, &[]).unwrap_err()[0].message.clone();
        assert!(
            err("${env:1BAD}").contains("invalid name"),
            "{}",
            err("${env:1BAD}")
        );
        assert!(err("${http://x}").contains("unsupported scheme \"http\""));
        assert!(err("${file:/definitely/not/here}").contains("cannot read file"));
    }

    #[test]
    fn file_reference_brings_a_map_whose_references_expand() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("part.yaml");
        std::fs::write(&file, "endpoint: ${env:H}\nport: 1\n").unwrap();
        let reference = format!("${{file:{}}}", file.display());
        let value = expand(&reference, &[("H", "gw")]).unwrap();
        assert_eq!(
            value,
            serde_yaml_ng::from_str::<Value>("{endpoint: gw, port: 1}").unwrap()
        );

        // A map cannot be pasted into the middle of a string.
        let errors = expand(&format!("x {reference}"), &[("H", "gw")]).unwrap_err();
        assert!(
            errors[0].message.contains("inside a string"),
            "{}",
            errors[0].message
        );

        // A secret file's trailing newline is not part of the value.
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let value = expand(&format!("Bearer ${{file:{}}}", token.display()), &[]).unwrap();
        assert_eq!(value, s("Bearer s3cret"));
    }

    #[test]
    fn yaml_references_are_inline_yaml() {
        assert_eq!(
            expand("${yaml:[1, 2]}", &[]).unwrap(),
            serde_yaml_ng::from_str::<Value>("[1, 2]").unwrap()
        );
        assert_eq!(expand("${yaml:42}", &[]).unwrap(), Value::Number(42.into()));
    }
}
