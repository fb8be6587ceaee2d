//! Payload compression for clients (upstream `configcompression`).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// How a client compresses what it sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip: the upstream default for OTLP exporters.
    #[default]
    Gzip,
    Zstd,
    /// No compression (`none` or an empty string).
    None,
}

impl Compression {
    pub const SUPPORTED: &'static str = "gzip, zstd, none";

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    pub fn is_compressed(self) -> bool {
        self != Compression::None
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "" => Ok(Compression::None),
            known @ ("snappy" | "zlib" | "deflate" | "lz4" | "x-snappy-framed") => Err(format!(
                "compression {known:?} is not supported; supported: {}",
                Compression::SUPPORTED
            )),
            other => Err(format!(
                "unknown compression {other:?}; supported: {}",
                Compression::SUPPORTED
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CompressionVisitor;

        impl Visitor<'_> for CompressionVisitor {
            type Value = Compression;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "one of {}", Compression::SUPPORTED)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Compression, E> {
                text.parse().map_err(E::custom)
            }

            // `compression:` with no value means none.
            fn visit_unit<E: de::Error>(self) -> Result<Compression, E> {
                Ok(Compression::None)
            }
        }

        deserializer.deserialize_str(CompressionVisitor)
    }
}

/// `compression_params`: tuning for the chosen algorithm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionParams {
    /// Compression level; 0 uses the algorithm's default.
    pub level: i32,
}
