//! Request-body compression for the OTLP exporters, done in one shot over the encoded request.
//!
//! gzip is the upstream default for OTLP exporters and, at saturation, most of a pass-through
//! collector's CPU. A whole request is in memory anyway, so gzip goes through libdeflate, whose
//! one-shot compressor produces the same format about 1.4x faster than streaming zlib at the same
//! level and ratio (BENCHMARKS.md). The output leaves `prefix` bytes free at the front, so the
//! gRPC exporter writes its 5-byte frame header there without copying the compressed body again.

use std::io;
use std::sync::{Mutex, OnceLock};

use threadline_config::settings::Compression;

/// gzip level when `compression_params.level` is 0: upstream's (Go's `gzip.DefaultCompression`).
pub const DEFAULT_GZIP_LEVEL: i32 = 6;
/// zstd level when `compression_params.level` is 0 (the zstd library's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// What one compression needs besides its input: a libdeflate compressor (its match-finder state
/// is sizeable, so it is reused) and a worst-case output buffer (allocating one per batch cost
/// page faults).
#[derive(Default)]
struct Workspace {
    gzip: Option<(i32, libdeflater::Compressor)>,
    scratch: Vec<u8>,
}

/// Workspaces not in use. A shared, bounded pool rather than per-thread state: compression runs
/// on tokio's blocking pool, whose threads come and go, and per-thread buffers would add up over
/// every thread ever used.
static IDLE: Mutex<Vec<Workspace>> = Mutex::new(Vec::new());

/// Largest output buffer kept between calls: room for a batch of about 16,000 typical spans.
const SCRATCH_KEPT: usize = 8 << 20;

/// Workspaces kept idle: as many as the exporters prepare (compress) batches at once.
fn idle_kept() -> usize {
    static KEPT: OnceLock<usize> = OnceLock::new();
    *KEPT.get_or_init(|| crate::exporters::helper::preparer_count() as usize)
}

fn with_workspace<R>(use_it: impl FnOnce(&mut Workspace) -> R) -> R {
    let mut workspace = IDLE
        .lock()
        .ok()
        .and_then(|mut idle| idle.pop())
        .unwrap_or_default();
    let result = use_it(&mut workspace);
    if workspace.scratch.len() > SCRATCH_KEPT {
        workspace.scratch = Vec::new();
    }
    if let Ok(mut idle) = IDLE.lock() {
        if idle.len() < idle_kept() {
            idle.push(workspace);
        }
    }
    result
}

/// The level to compress with, from `compression_params.level` (0 or -1: the default), or why it
/// is not allowed. Checked with the config, so a bad level never drops data later.
pub fn effective_level(compression: Compression, level: i32) -> Result<i32, String> {
    match (compression, level) {
        (Compression::None, _) => Ok(0),
        (Compression::Gzip, 0 | -1) => Ok(DEFAULT_GZIP_LEVEL),
        (Compression::Gzip, 1..=9) => Ok(level),
        (Compression::Gzip, _) => Err(format!(
            "{level} is not a gzip level (allowed: 1 to 9, or 0 for the default {DEFAULT_GZIP_LEVEL})"
        )),
        (Compression::Zstd, 0) => Ok(DEFAULT_ZSTD_LEVEL),
        (Compression::Zstd, 1..=22) => Ok(level),
        (Compression::Zstd, _) => Err(format!(
            "{level} is not a zstd level (allowed: 1 to 22, or 0 for the default {DEFAULT_ZSTD_LEVEL})"
        )),
    }
}

/// `input` compressed with `compression` at `level` (0: the default), after `prefix` zero bytes.
/// `None` means no compression: the caller sends `input` as it is.
pub fn compress_with_prefix(
    compression: Compression,
    level: i32,
    input: &[u8],
    prefix: usize,
) -> io::Result<Option<Vec<u8>>> {
    let level = effective_level(compression, level)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    match compression {
        Compression::None => Ok(None),
        Compression::Gzip => gzip(level, input, prefix).map(Some),
        Compression::Zstd => zstd_compress(level, input, prefix).map(Some),
    }
}

fn gzip(level: i32, input: &[u8], prefix: usize) -> io::Result<Vec<u8>> {
    let lvl = libdeflater::CompressionLvl::new(level).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{level} is not a gzip level"),
        )
    })?;
    with_workspace(|workspace| {
        let compressor = match &mut workspace.gzip {
            Some((kept, compressor)) if *kept == level => compressor,
            other => &mut other.insert((level, libdeflater::Compressor::new(lvl))).1,
        };
        let bound = compressor.gzip_compress_bound(input.len());
        compress_into(&mut workspace.scratch, bound, prefix, |out| {
            compressor
                .gzip_compress(input, out)
                .map_err(|e| io::Error::other(format!("gzip: {e:?}")))
        })
    })
}

fn zstd_compress(level: i32, input: &[u8], prefix: usize) -> io::Result<Vec<u8>> {
    let bound = zstd::zstd_safe::compress_bound(input.len());
    with_workspace(|workspace| {
        compress_into(&mut workspace.scratch, bound, prefix, |out| {
            zstd::bulk::compress_to_buffer(input, out, level)
        })
    })
}

/// Runs `compress` on `scratch` (grown to `bound` bytes) and returns what it wrote, after `prefix`
/// zero bytes, in a vector of exactly that size: that is what an in-memory queue holds.
fn compress_into(
    scratch: &mut Vec<u8>,
    bound: usize,
    prefix: usize,
    compress: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<Vec<u8>> {
    if scratch.len() < bound {
        scratch.resize(bound, 0);
    }
    let written = compress(&mut scratch[..bound])?;
    let mut out = Vec::with_capacity(prefix + written);
    out.resize(prefix, 0);
    out.extend_from_slice(&scratch[..written]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("span-{} service-{} ", i % 977, i % 13).into_bytes())
            .collect()
    }

    #[test]
    fn gzip_round_trips_through_a_standard_decoder_with_the_prefix_left_free() {
        let input = sample();
        for level in [0, 1, 6, 9] {
            let out = compress_with_prefix(Compression::Gzip, level, &input, 5)
                .expect("compresses")
                .expect("compressed");
            assert_eq!(&out[..5], &[0; 5]);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&out[5..])
                .read_to_end(&mut decoded)
                .expect("valid gzip");
            assert_eq!(decoded, input, "level {level}");
            assert!(out.len() < input.len() / 4, "level {level}: {}", out.len());
        }
    }

    #[test]
    fn many_threads_compressing_leave_at_most_one_idle_workspace_per_cpu() {
        let input = sample();
        let outputs: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..(idle_kept() * 2 + 3))
                .map(|_| {
                    scope.spawn(|| {
                        compress_with_prefix(Compression::Gzip, 0, &input, 5)
                            .expect("compresses")
                            .expect("compressed")
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("no panic"))
                .collect()
        });
        assert!(
            outputs.iter().all(|out| out == &outputs[0]),
            "same input, same output"
        );
        assert_eq!(outputs[0].capacity(), outputs[0].len(), "exact-size output");
        let idle = IDLE.lock().expect("not poisoned").len();
        assert!(idle <= idle_kept(), "{idle} idle workspaces");
    }

    #[test]
    fn zstd_round_trips_and_none_is_none() {
        let input = sample();
        let out = compress_with_prefix(Compression::Zstd, 0, &input, 0)
            .expect("compresses")
            .expect("compressed");
        assert_eq!(zstd::decode_all(&out[..]).expect("valid zstd"), input);
        assert!(compress_with_prefix(Compression::None, 0, &input, 5)
            .expect("ok")
            .is_none());
    }

    #[test]
    fn levels_are_checked_with_the_allowed_range_named() {
        assert_eq!(effective_level(Compression::Gzip, 0), Ok(6));
        assert_eq!(effective_level(Compression::Gzip, 9), Ok(9));
        assert_eq!(effective_level(Compression::Zstd, 0), Ok(3));
        let err = effective_level(Compression::Gzip, 42).expect_err("level 42");
        assert!(
            err.contains("42 is not a gzip level") && err.contains("1 to 9"),
            "{err}"
        );
        let err = effective_level(Compression::Zstd, -3).expect_err("level -3");
        assert!(err.contains("1 to 22"), "{err}");
        let err = compress_with_prefix(Compression::Gzip, 42, b"x", 0).expect_err("level 42");
        assert!(err.to_string().contains("42 is not a gzip level"), "{err}");
    }
}
