//! PII and secrets in attributes: emails, card numbers (Luhn-checked), IBANs (mod-97), phone
//! numbers, bearer/basic credentials, JWTs, API keys, and keys named like secrets. Values are
//! never reported, only masked.

use std::collections::{HashMap, HashSet};

use threadline_traceql::model::Value;

use crate::finding::{Category, Example, Finding, Severity};
use crate::spans::TraceIndex;
use crate::Thresholds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    SecretKey,
    Email,
    CardNumber,
    Iban,
    Phone,
    BearerToken,
    Jwt,
    ApiKey,
}

impl PiiKind {
    pub fn id(self) -> &'static str {
        match self {
            PiiKind::SecretKey => "secret_key",
            PiiKind::Email => "email",
            PiiKind::CardNumber => "card_number",
            PiiKind::Iban => "iban",
            PiiKind::Phone => "phone_number",
            PiiKind::BearerToken => "credentials",
            PiiKind::Jwt => "jwt",
            PiiKind::ApiKey => "api_key",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            PiiKind::SecretKey => "a value under a secret-named key",
            PiiKind::Email => "email addresses",
            PiiKind::CardNumber => "payment card numbers",
            PiiKind::Iban => "IBANs",
            PiiKind::Phone => "phone numbers",
            PiiKind::BearerToken => "HTTP credentials (Bearer/Basic)",
            PiiKind::Jwt => "JSON Web Tokens",
            PiiKind::ApiKey => "API keys",
        }
    }

    fn is_secret(self) -> bool {
        matches!(
            self,
            PiiKind::SecretKey | PiiKind::BearerToken | PiiKind::Jwt | PiiKind::ApiKey
        )
    }
}

/// What a key name alone tells: `password`, `authorization`, `api_key`, ... as a word of the key.
pub fn secret_key_name(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(['.', '_', '-', ' ']).collect();
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "pwd",
        "secret",
        "authorization",
        "apikey",
        "token",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
    ];
    words.iter().any(|w| WORDS.contains(w))
        || lower.contains("api_key")
        || lower.contains("api-key")
        || lower.contains("private_key")
        || lower.contains("access_key")
        || lower.contains("client_secret")
}

/// What a value is, if it is personal data or a secret.
pub fn classify_value(value: &str) -> Option<PiiKind> {
    let value = value.trim();
    if value.len() < 5 {
        return None;
    }
    let starts_with = |prefix: &str| {
        value
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    if starts_with("bearer ") || starts_with("basic ") {
        return Some(PiiKind::BearerToken);
    }
    if is_jwt(value) {
        return Some(PiiKind::Jwt);
    }
    if is_api_key(value) {
        return Some(PiiKind::ApiKey);
    }
    if value.contains('@') && contains_email(value) {
        return Some(PiiKind::Email);
    }
    if contains_card_number(value) {
        return Some(PiiKind::CardNumber);
    }
    if is_iban(value) {
        return Some(PiiKind::Iban);
    }
    if is_phone(value) {
        return Some(PiiKind::Phone);
    }
    None
}

fn is_jwt(value: &str) -> bool {
    if !value.starts_with("eyJ") {
        return false;
    }
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts[1].len() >= 4
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=')
        })
}

fn is_api_key(value: &str) -> bool {
    const PREFIXES: &[(&str, usize)] = &[
        ("sk_live_", 16),
        ("sk_test_", 16),
        ("rk_live_", 16),
        ("ghp_", 30),
        ("gho_", 30),
        ("github_pat_", 30),
        ("glpat-", 20),
        ("xoxb-", 20),
        ("xoxp-", 20),
        ("AIza", 35),
        ("AKIA", 20),
        ("ASIA", 20),
    ];
    !value.contains(' ')
        && PREFIXES.iter().any(|(prefix, min)| {
            value.starts_with(prefix)
                && value.len() >= *min
                && value[prefix.len()..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && (*prefix != "AKIA" && *prefix != "ASIA"
                    || (value.len() == 20
                        && value
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())))
        })
}

fn contains_email(value: &str) -> bool {
    value
        .split(|c: char| c.is_whitespace() || "<>,;:\"'()[]=&?/".contains(c))
        .any(|word| {
            let Some((local, domain)) = word.rsplit_once('@') else {
                return false;
            };
            let local_ok = !local.is_empty()
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
            let labels: Vec<&str> = domain.split('.').collect();
            let domain_ok = labels.len() >= 2
                && labels.iter().all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
                && labels.last().is_some_and(|tld| {
                    tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
                });
            local_ok && domain_ok
        })
}

/// Luhn's checksum over digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = *d as u32;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Card brands' number prefixes and lengths (Visa, Mastercard, Amex, Discover, JCB, Diners).
fn plausible_card(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| -> u32 { digits[..k].iter().fold(0, |a, d| a * 10 + *d as u32) };
    match digits[0] {
        4 => n == 13 || n == 16 || n == 19,
        5 => (51..=55).contains(&prefix(2)) && n == 16,
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        3 => {
            (matches!(prefix(2), 34 | 37) && n == 15)
                || (matches!(prefix(2), 35) && (16..=19).contains(&n))
                || (matches!(prefix(2), 36 | 38 | 30) && n == 14)
        }
        6 => (prefix(4) == 6011 || prefix(2) == 65) && (16..=19).contains(&n),
        _ => false,
    }
}

/// A card number in the text: 13 to 19 digits, optionally grouped by spaces or dashes,
/// with a brand's prefix and length and a valid Luhn checksum.
pub fn contains_card_number(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut digits = [0u8; 20];
        let mut n = 0;
        let mut j = i;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digits[n] = b - b'0';
                n += 1;
            } else if !((b == b' ' || b == b'-')
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_digit())
            {
                break;
            }
            if n > 19 {
                break;
            }
            j += 1;
        }
        let digits = &digits[..n];
        let ends_clean = j >= bytes.len() || !bytes[j].is_ascii_alphanumeric();
        if ends_clean
            && (13..=19).contains(&digits.len())
            && plausible_card(digits)
            && luhn_valid(digits)
        {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// An IBAN (spaces allowed): country code, check digits, BBAN; mod 97 = 1 (ISO 13616).
pub fn is_iban(value: &str) -> bool {
    // Most values fail on their first bytes: no allocation for them.
    let head = value.as_bytes();
    if head.len() < 15 || !head[0].is_ascii_uppercase() || !head[1].is_ascii_uppercase() {
        return false;
    }
    let compact: String = value.chars().filter(|c| *c != ' ').collect();
    let b = compact.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_uppercase()
        || !b[2].is_ascii_digit()
        || !b[3].is_ascii_digit()
        || !b
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let mut remainder: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let n = if c.is_ascii_digit() {
            (c - b'0') as u32
        } else {
            (c - b'A') as u32 + 10
        };
        remainder = if n >= 10 {
            (remainder * 100 + n) % 97
        } else {
            (remainder * 10 + n) % 97
        };
    }
    remainder == 1
}

/// A phone number in international form: `+` and 8 to 15 digits, spaces, dashes, dots or
/// parentheses between them.
pub fn is_phone(value: &str) -> bool {
    let Some(rest) = value.strip_prefix('+') else {
        return false;
    };
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || " -.()".contains(c))
        || !rest.starts_with(|c: char| c.is_ascii_digit() && c != '0')
    {
        return false;
    }
    let digits = rest.chars().filter(|c| c.is_ascii_digit()).count();
    (8..=15).contains(&digits)
}

/// A masked stand-in for a value: its shape, never its content.
pub fn mask(value: &str) -> String {
    let n = value.chars().count();
    format!("{} ({n} chars)", "*".repeat(n.min(8)))
}

#[derive(Default)]
struct KeyStats {
    spans: u64,
    examples: Vec<([u8; 16], String)>,
}

#[derive(Default)]
pub struct PiiDetector {
    /// (service, "span"/"resource", key, kind) → occurrences.
    found: HashMap<(String, &'static str, String, PiiKind), KeyStats>,
    spans: HashMap<String, u64>,
    /// `secret_key_name` of the keys seen so far (an estate has few distinct keys).
    secret_keys: HashMap<String, bool>,
}

/// Distinct keys remembered in `secret_keys`; keys beyond are checked each time.
const MAX_CACHED_KEYS: usize = 10_000;

impl PiiDetector {
    pub fn observe(&mut self, index: &TraceIndex<'_>, thresholds: &Thresholds) {
        let mut resources_seen: HashSet<&str> = HashSet::new();
        for span in &index.trace.spans {
            let service = span.service_name();
            match self.spans.get_mut(service) {
                Some(n) => *n += 1,
                None => {
                    self.spans.insert(service.to_string(), 1);
                }
            }
            for (key, value) in &span.attributes {
                self.check(
                    service,
                    "span",
                    key,
                    value,
                    index.trace.trace_id,
                    thresholds,
                );
            }
            if resources_seen.insert(service) {
                for (key, value) in &span.resource_attributes {
                    self.check(
                        service,
                        "resource",
                        key,
                        value,
                        index.trace.trace_id,
                        thresholds,
                    );
                }
            }
        }
    }

    fn check(
        &mut self,
        service: &str,
        scope: &'static str,
        key: &str,
        value: &Value,
        trace_id: [u8; 16],
        thresholds: &Thresholds,
    ) {
        let text = match value {
            Value::Str(s) => s.as_str(),
            Value::Int(i) if *i >= 1_000_000_000_000 => {
                // A card number stored as an integer.
                let digits = i.to_string();
                if contains_card_number(&digits) {
                    self.record(
                        service,
                        scope,
                        key,
                        PiiKind::CardNumber,
                        &digits,
                        trace_id,
                        thresholds,
                    );
                }
                return;
            }
            // Array attributes (`http.request.header.*`, lists of recipients) are checked
            // element by element, under the array's key.
            Value::Array(items) => {
                for item in items {
                    self.check(service, scope, key, item, trace_id, thresholds);
                }
                return;
            }
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => return,
        };
        if text.is_empty() {
            return;
        }
        let kind =
            classify_value(text).or_else(|| self.is_secret_key(key).then_some(PiiKind::SecretKey));
        if let Some(kind) = kind {
            self.record(service, scope, key, kind, text, trace_id, thresholds);
        }
    }

    fn is_secret_key(&mut self, key: &str) -> bool {
        if let Some(secret) = self.secret_keys.get(key) {
            return *secret;
        }
        let secret = secret_key_name(key);
        if self.secret_keys.len() < MAX_CACHED_KEYS {
            self.secret_keys.insert(key.to_string(), secret);
        }
        secret
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        service: &str,
        scope: &'static str,
        key: &str,
        kind: PiiKind,
        text: &str,
        trace_id: [u8; 16],
        thresholds: &Thresholds,
    ) {
        let stats = self
            .found
            .entry((service.to_string(), scope, key.to_string(), kind))
            .or_default();
        stats.spans += 1;
        if stats.examples.len() < thresholds.examples.min(3)
            && !stats.examples.iter().any(|(t, _)| *t == trace_id)
        {
            stats.examples.push((trace_id, mask(text)));
        }
    }

    pub fn findings(self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for ((service, scope, key, kind), stats) in self.found {
            let total = self.spans.get(&service).copied().unwrap_or(stats.spans);
            let action = if kind.is_secret() { "delete" } else { "hash" };
            // The `resource` processor edits resource attributes; `attributes` edits span ones.
            let (processor, list) = if scope == "resource" {
                ("resource", "attributes")
            } else {
                ("attributes", "actions")
            };
            findings.push(Finding {
                kind: format!("pii_{}", kind.id()),
                category: Category::Pii,
                severity: if kind.is_secret()
                    || kind == PiiKind::CardNumber
                    || kind == PiiKind::Iban
                {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                title: format!(
                    "{service} puts {} in {scope} attribute `{key}`",
                    kind.describe()
                ),
                services: vec![service.clone()],
                hop: None,
                attribute: Some(key.clone()),
                count: stats.spans,
                total,
                examples: stats
                    .examples
                    .iter()
                    .map(|(t, masked)| Example::trace(t).with_note(format!("{key} = {masked}")))
                    .collect(),
                detail: format!(
                    "{} spans of {service} carry {} in `{key}` (values masked here). Traces are \
                     kept for days and read by many people: this data should not be in them.",
                    stats.spans,
                    kind.describe()
                ),
                fix: format!(
                    "Stop {service} from recording `{key}`; until then, {action} it in the \
                     collector ({processor} processor, first after memory_limiter)."
                ),
                fix_config: Some(format!(
                    "processors:\n  {processor}/redact:\n    {list}:\n      - key: {key}\n        \
                     action: {action}\nservice:\n  pipelines:\n    traces:\n      processors: \
                     [memory_limiter, {processor}/redact, batch]\n"
                )),
            });
        }
        findings
    }
}
