//! Per page of a block, a Bloom filter of its attribute values: a search for `attr = value`
//! reads only the pages that may hold the value.
//!
//! Block indexes know which attribute keys a block has, so a query on a key no span has reads
//! nothing; but a value no span has (`{ span.user_agent.original = "x" }`) or a rare one read
//! every page that has the key: 34 s over 7.5M spans (BENCHMARKS.md, 2026-12-03). The `values`
//! object of a block holds, for each page, a filter of (scope, key, value) hashes: 20 bits per
//! distinct value of the page and 14 hashes (about 0.007% false positives). At 10 bits and 7
//! hashes (1%), a value no span has still read 70 of 7,050 pages over 10M spans, 1.5 s of
//! decoding; 20 bits cost 0.86 more bytes per span on disk.
//!
//! Values are hashed as TraceQL compares them: strings as text (bytes as their hex, as the
//! model has them), every number as its `f64` (`4095` finds an int or a double attribute),
//! booleans, and each element of an array (an array attribute equals a value one of its
//! elements equals). Key-value lists have no TraceQL form and are left out.

use std::collections::HashSet;
use std::hash::Hasher;

use threadline_otlp::{AnyValueView, TraceData};
use threadline_traceql::model::Value;
use twox_hash::XxHash64;

use crate::attr_keys::KeyScope;

/// The object name of a block's value filters.
pub const OBJECT: &str = "values";

const MAGIC: &[u8; 6] = b"TLVAL1";
const BITS_PER_VALUE: usize = 20;
const HASHES: u64 = 14;

/// An attribute value as a search compares it.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKey {
    Str(String),
    Number(f64),
    Bool(bool),
}

/// Byte strings a trace's encoding holds if it may match: each required attribute's key, and
/// each required string value (as its UTF-8, or the bytes its hex spells: a bytes attribute
/// equals the hex of its bytes). Checking them costs a memory scan, decoding a trace into the
/// model costs about 100 times more.
#[derive(Debug, Default)]
pub struct Needles {
    /// Each entry: byte strings one of which must be found.
    all_of: Vec<Vec<Vec<u8>>>,
}

impl Needles {
    pub fn of(required: &[crate::attr_keys::RequiredKey]) -> Needles {
        let mut all_of = Vec::new();
        for r in required {
            all_of.push(vec![r.key.as_bytes().to_vec()]);
            if let Some(ValueKey::Str(s)) = &r.value {
                let mut any = vec![s.as_bytes().to_vec()];
                if let Ok(bytes) = hex::decode(s) {
                    any.push(bytes);
                }
                all_of.push(any);
            }
        }
        Needles { all_of }
    }

    pub fn is_empty(&self) -> bool {
        self.all_of.is_empty()
    }

    /// Whether `encoded` holds every needle (one of each alternative set).
    pub fn all_in(&self, encoded: &[u8]) -> bool {
        self.all_of.iter().all(|any| {
            any.iter()
                .any(|needle| memchr::memmem::find(encoded, needle).is_some())
        })
    }
}

/// The hash of `scope`, `key` and a value, the same at write and at search.
pub fn value_hash(scope: KeyScope, key: &str, value: ValueRef<'_>) -> u64 {
    // Streamed, not gathered into a buffer: this runs for every attribute a block is written
    // with. xxh64 of the same bytes either way.
    let mut hasher = XxHash64::with_seed(0);
    hasher.write(&[scope as u8]);
    hasher.write(key.as_bytes());
    hasher.write(&[0xff]); // never in UTF-8: the key ends here
    match value {
        ValueRef::Str(s) => {
            hasher.write(b"s");
            hasher.write(s.as_bytes());
        }
        ValueRef::Number(n) => {
            let n = if n == 0.0 { 0.0 } else { n }; // -0 = 0
            hasher.write(b"n");
            hasher.write(&n.to_bits().to_le_bytes());
        }
        ValueRef::Bool(b) => {
            hasher.write(b"b");
            hasher.write(&[u8::from(b)]);
        }
    }
    hasher.finish()
}

/// A borrowed [`ValueKey`].
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Number(f64),
    Bool(bool),
}

impl ValueKey {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            ValueKey::Str(s) => ValueRef::Str(s),
            ValueKey::Number(n) => ValueRef::Number(*n),
            ValueKey::Bool(b) => ValueRef::Bool(*b),
        }
    }
}

/// The value filters of one block, one per page.
#[derive(Debug, Clone, Default)]
pub struct PageValues {
    pages: Vec<Filter>,
}

#[derive(Debug, Clone, Default)]
struct Filter {
    bits: Vec<u64>,
}

impl Filter {
    fn of(hashes: &HashSet<u64>) -> Filter {
        let words = (hashes.len() * BITS_PER_VALUE).div_ceil(64).max(1);
        let mut filter = Filter {
            bits: vec![0; words],
        };
        for hash in hashes {
            for bit in filter.positions(*hash) {
                filter.bits[bit / 64] |= 1 << (bit % 64);
            }
        }
        filter
    }

    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> {
        let bits = (self.bits.len() * 64) as u64;
        let (h1, h2) = (hash, hash.rotate_left(32) | 1);
        (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    fn may_contain(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

impl PageValues {
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Whether page `page` may hold a value of each of `required` (each a set of hashes, any
    /// of which may be present: one per scope the attribute may be in). True for a page the
    /// filters do not cover.
    pub fn may_hold_all(&self, page: u32, required: &[Vec<u64>]) -> bool {
        let Some(filter) = self.pages.get(page as usize) else {
            return true;
        };
        required
            .iter()
            .all(|any| any.iter().any(|hash| filter.may_contain(*hash)))
    }

    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .pages
                .iter()
                .map(|f| std::mem::size_of::<Filter>() + f.bits.len() * 8)
                .sum::<usize>()
    }

    pub fn encode(&self) -> Vec<u8> {
        let words: usize = self.pages.iter().map(|f| f.bits.len()).sum();
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + self.pages.len() * 4 + words * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        for filter in &self.pages {
            out.extend_from_slice(&(filter.bits.len() as u32).to_le_bytes());
            for word in &filter.bits {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<PageValues, String> {
        let rest = buf
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a value filter object (bad magic)")?;
        let mut at = 0usize;
        let u32_at = |at: &mut usize| -> Result<u32, String> {
            let bytes = rest
                .get(*at..*at + 4)
                .ok_or("the value filters end early")?;
            *at += 4;
            Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        };
        let count = u32_at(&mut at)? as usize;
        // Each page takes at least 4 bytes: a corrupt count cannot ask for more than the buffer.
        let mut pages = Vec::with_capacity(count.min(rest.len() / 4));
        for page in 0..count {
            let words = u32_at(&mut at)? as usize;
            let bytes = words
                .checked_mul(8)
                .and_then(|n| rest.get(at..at.checked_add(n)?))
                .ok_or_else(|| format!("the filter of page {page} ends early"))?;
            at += bytes.len();
            if words == 0 {
                return Err(format!("the filter of page {page} is empty"));
            }
            let bits = bytes
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
                .collect();
            pages.push(Filter { bits });
        }
        if at != rest.len() {
            return Err("bytes after the last page's filter".into());
        }
        Ok(PageValues { pages })
    }
}

/// Builds a block's value filters while its pages are written: [`PageValuesBuilder::push`]
/// each trace, [`PageValuesBuilder::end_page`] at each page cut.
#[derive(Default)]
pub struct PageValuesBuilder {
    page: HashSet<u64>,
    done: PageValues,
}

impl PageValuesBuilder {
    pub fn push(&mut self, trace: &TraceData) {
        let page = &mut self.page;
        for_each_value(trace, |scope, key, value| {
            page.insert(value_hash(scope, key, value));
        });
    }

    pub fn end_page(&mut self) {
        self.done.pages.push(Filter::of(&self.page));
        self.page.clear();
    }

    pub fn finish(self) -> PageValues {
        self.done
    }
}

/// Calls `visit` with every (scope, key, value) of the spans of `data`, each array element as
/// a value.
fn for_each_value(data: &TraceData, mut visit: impl FnMut(KeyScope, &str, ValueRef<'_>)) {
    crate::attr_keys::for_each_attribute(data, |scope, key, value| {
        visit_value(scope, key, value, &mut visit)
    });
}

fn visit_value(
    scope: KeyScope,
    key: &str,
    value: AnyValueView<'_>,
    visit: &mut impl FnMut(KeyScope, &str, ValueRef<'_>),
) {
    match value {
        AnyValueView::String(s) => visit(scope, key, ValueRef::Str(s)),
        AnyValueView::Bool(b) => visit(scope, key, ValueRef::Bool(b)),
        AnyValueView::Int(i) => visit(scope, key, ValueRef::Number(i as f64)),
        AnyValueView::Double(d) => visit(scope, key, ValueRef::Number(d)),
        AnyValueView::Empty => {}
        // Bytes (as hex) and arrays (each element) as the model reads them: rare, so the
        // model's allocating reader is fine here.
        AnyValueView::Bytes(_) | AnyValueView::Raw(_) => match crate::model::value(value) {
            Some(Value::Array(items)) => {
                for item in &items {
                    visit_model_value(scope, key, item, visit);
                }
            }
            Some(other) => visit_model_value(scope, key, &other, visit),
            None => {}
        },
    }
}

fn visit_model_value(
    scope: KeyScope,
    key: &str,
    value: &Value,
    visit: &mut impl FnMut(KeyScope, &str, ValueRef<'_>),
) {
    match value {
        Value::Str(s) => visit(scope, key, ValueRef::Str(s)),
        Value::Int(i) => visit(scope, key, ValueRef::Number(*i as f64)),
        Value::Float(f) => visit(scope, key, ValueRef::Number(*f)),
        Value::Bool(b) => visit(scope, key, ValueRef::Bool(*b)),
        Value::Array(items) => {
            for item in items {
                visit_model_value(scope, key, item, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests;
