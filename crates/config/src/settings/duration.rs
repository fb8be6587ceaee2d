//! Go-style durations (`500ms`, `1m30s`, `1.5h`), as upstream configs write them.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const UNITS_HELP: &str = "valid units are ns, us (or µs), ms, s, m, h";
/// Go's `time.Duration` is an int64 of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Why a duration string was rejected. Displays as
/// `invalid duration "5x": unknown unit "x"; valid units are ns, us (or µs), ms, s, m, h`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

fn error(text: &str, reason: impl Into<String>) -> DurationError {
    DurationError {
        text: text.to_string(),
        reason: reason.into(),
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string: a sequence of decimal numbers, each with an optional fraction
/// and a unit (`300ms`, `1.5h`, `2h45m`); `0` needs no unit. Negative durations are rejected.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error(text, format!("empty duration; {UNITS_HELP}")));
    }
    let negative = rest.starts_with('-');
    if negative || rest.starts_with('+') {
        rest = &rest[1..];
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(error(text, "missing number"));
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(error(text, format!("expected a number; {UNITS_HELP}")));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(error(
                text,
                format!(
                    "missing unit after {int_digits}{}; {UNITS_HELP}",
                    frac_part(frac_digits)
                ),
            ));
        }
        let scale = unit_nanos(unit)
            .ok_or_else(|| error(text, format!("unknown unit {unit:?}; {UNITS_HELP}")))?;

        let out_of_range = || error(text, "out of range (the maximum is about 292 years)");
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| out_of_range())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(out_of_range)?;
        // Only the digits that can matter at nanosecond precision are used, as Go does.
        let frac: String = frac_digits.chars().take(20).collect();
        if !frac.is_empty() {
            let numerator: u128 = frac.parse().map_err(|_| out_of_range())?;
            let denominator = 10u128.pow(frac.len() as u32);
            nanos += numerator * scale / denominator;
        }
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
    }
    if negative && total > 0 {
        return Err(error(text, "negative durations are not allowed"));
    }
    Ok(Duration::from_nanos(total as u64))
}

fn frac_part(digits: &str) -> String {
    if digits.is_empty() {
        String::new()
    } else {
        format!(".{digits}")
    }
}

/// Formats like Go's `Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (scale, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            (1_000, "µs")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", decimal(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with the fraction written only as far as needed.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A duration read from a Go-style string (`5s`, `1m30s`, `250ms`). Also accepts the number
/// `0`; other bare numbers are rejected because their unit would be ambiguous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        GoDuration(Duration::from_millis(millis))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// The duration, or `None` when it is zero (the settings where zero means "no limit" or
    /// "the default").
    pub fn non_zero(self) -> Option<Duration> {
        (!self.is_zero()).then_some(self.0)
    }
}

impl Deref for GoDuration {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        GoDuration(duration)
    }
}

impl From<GoDuration> for Duration {
    fn from(duration: GoDuration) -> Self {
        duration.0
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        parse(text).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5s\", \"500ms\" or \"1m30s\"")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<GoDuration, E> {
                parse(text).map(GoDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<GoDuration, E> {
                if n == 0 {
                    Ok(GoDuration::ZERO)
                } else {
                    Err(E::custom(format!(
                        "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {UNITS_HELP}"
                    )))
                }
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<GoDuration, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {n}: negative durations are not allowed"
                    ))),
                }
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<GoDuration, E> {
                if n == 0.0 {
                    Ok(GoDuration::ZERO)
                } else {
                    Err(E::custom(format!(
                        "invalid duration {n}: a number needs a unit, e.g. \"{n}s\"; {UNITS_HELP}"
                    )))
                }
            }
        }

        // `any`, so that a bare number reaches `visit_u64` and gets the "needs a unit" message.
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("250μs"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5.s"), Duration::from_secs(5));
        assert_eq!(
            ok("2h45m0.5s"),
            Duration::from_millis((2 * 3600 + 45 * 60) * 1000 + 500)
        );
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_durations_naming_text_and_units() {
        let err = parse("5x").unwrap_err().to_string();
        assert_eq!(err, "invalid duration \"5x\": unknown unit \"x\"; valid units are ns, us (or µs), ms, s, m, h");
        assert!(parse("5")
            .unwrap_err()
            .to_string()
            .contains("missing unit after 5"));
        assert!(parse("")
            .unwrap_err()
            .to_string()
            .contains("empty duration"));
        assert!(parse("s")
            .unwrap_err()
            .to_string()
            .contains("expected a number"));
        assert!(parse(".s").is_err());
        assert!(parse("-5s").unwrap_err().to_string().contains("negative"));
        assert!(parse("1d")
            .unwrap_err()
            .to_string()
            .contains("unknown unit \"d\""));
        assert!(parse("9999999999999h")
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format(duration), text);
            assert_eq!(ok(text), duration, "round trip of {text}");
        }
    }

    #[test]
    fn non_zero_is_none_only_for_zero() {
        assert_eq!(GoDuration::ZERO.non_zero(), None);
        assert_eq!(
            GoDuration::from_millis(250).non_zero(),
            Some(Duration::from_millis(250))
        );
    }
}
