//! JSON Schemas of the config types whose serde impls are written by hand, so that the generated
//! component reference (`threadline components --docs`) describes them as the YAML writes them.
//! Types deriving `Deserialize` derive `schemars::JsonSchema` beside it instead.

/// Implements `schemars::JsonSchema` (a string) and, with `display`, `serde::Serialize` (through
/// `Display`, so that defaults show in the reference) for a type read from text:
/// `text_schema!(GoDuration, "Duration", format = "duration")`, or
/// `text_schema!(Compression, "Compression", values = ["gzip", "zstd", "none"], display)`.
#[macro_export]
macro_rules! text_schema {
    ($ty:ty, $name:literal, format = $format:literal $(, $display:ident)?) => {
        $crate::text_schema!(@impl $ty, $name, { "type": "string", "format": $format } $(, $display)?);
    };
    ($ty:ty, $name:literal, values = [$($value:literal),+ $(,)?] $(, $display:ident)?) => {
        $crate::text_schema!(@impl $ty, $name, { "type": "string", "enum": [$($value),+] } $(, $display)?);
    };
    (@impl $ty:ty, $name:literal, $schema:tt) => {
        impl $crate::__schemars::JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(
                _: &mut $crate::__schemars::SchemaGenerator,
            ) -> $crate::__schemars::Schema {
                $crate::__schemars::json_schema!($schema)
            }
        }
    };
    (@impl $ty:ty, $name:literal, $schema:tt, display) => {
        $crate::text_schema!(@impl $ty, $name, $schema);

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

use crate::settings::{Compression, GoDuration, QueueSizer, TlsVersion};
use crate::ComponentId;

text_schema!(GoDuration, "Duration", format = "duration");
text_schema!(ComponentId, "ComponentId", format = "component-id");
text_schema!(
    Compression,
    "Compression",
    values = ["gzip", "zstd", "none"],
    display
);
text_schema!(
    QueueSizer,
    "QueueSizer",
    values = ["requests", "items", "bytes"],
    display
);
text_schema!(
    TlsVersion,
    "TlsVersion",
    values = ["1.0", "1.1", "1.2", "1.3"],
    display
);
