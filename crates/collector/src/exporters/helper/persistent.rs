//! The disk half of a persistent sending queue (`sending_queue::storage: file_storage`).
//!
//! # Design
//!
//! One file per accepted request, in a directory that belongs to one exporter (handed out by the
//! `file_storage` extension). Files are named by a sequence number, zero-padded so that a directory
//! listing sorts in send order: `00000000000000000042.req`.
//!
//! A file is a 24-byte header followed by the request bytes (an encoded ExportTraceServiceRequest):
//!
//! ```text
//! magic "TLQ1" | crc32 of payload (u32 LE) | span count (u64 LE) | payload length (u64 LE) | payload
//! ```
//!
//! * **Enqueue**: create the file, write it, `fsync` it, then `fsync` the directory so that the new
//!   name is durable too. Only then does the exporter answer `Ok` to the pipeline. Directory
//!   `fsync`s are shared between concurrent writers (a "group commit"): a writer whose file was
//!   complete before someone else's directory `fsync` started does not need its own.
//! * **Dequeue**: read the file back and check its length and checksum. A file torn by a crash in the
//!   middle of a write (it was never acknowledged) fails the check, is logged and deleted.
//! * **Done**: the file is deleted after a successful send or a permanent failure. The delete is not
//!   `fsync`ed: if a crash loses it, the request is sent again after restart (at-least-once).
//! * **Start**: every `*.req` file in the directory is queued again, oldest first, ahead of new data.
//!   Requests whose send was cut short by a shutdown simply stay on disk for that.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use threadline_otlp::TraceData;

const MAGIC: &[u8; 4] = b"TLQ1";
const HEADER_LEN: usize = 24;
const EXTENSION: &str = "req";

/// Why a queued request could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Torn by a crash during its write, or damaged on disk.
    #[error("{path} is incomplete or damaged ({reason}); it is ignored")]
    Corrupt { path: PathBuf, reason: String },
}

/// The request files of one exporter's queue.
pub struct DiskQueue {
    dir: PathBuf,
    next_seq: AtomicU64,
    /// Writes whose file is complete (counted when done), for the directory group commit.
    completed_writes: AtomicU64,
    /// `completed_writes` as read just before the last directory `fsync` started.
    synced_through: tokio::sync::Mutex<u64>,
}

impl DiskQueue {
    /// Opens (creating if needed) the queue in `dir` and returns it with the sequence numbers of the
    /// requests already on disk, oldest first.
    pub fn open(dir: &Path) -> io::Result<(DiskQueue, Vec<u64>)> {
        fs::create_dir_all(dir)?;
        let mut pending = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            if let Some(seq) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                pending.push(seq);
            }
        }
        pending.sort_unstable();
        let next_seq = pending.last().map_or(0, |last| last + 1);
        let queue = DiskQueue {
            dir: dir.to_path_buf(),
            next_seq: AtomicU64::new(next_seq),
            completed_writes: AtomicU64::new(0),
            synced_through: tokio::sync::Mutex::new(0),
        };
        Ok((queue, pending))
    }

    pub fn directory(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{EXTENSION}"))
    }

    /// Writes `data` durably and returns its sequence number. When this returns `Ok`, the request
    /// survives a crash of the process or the machine.
    pub async fn write(&self, data: &TraceData) -> io::Result<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.path_of(seq);
        let payload = data.as_bytes().clone();
        let span_count = data.span_count() as u64;
        let file_path = path.clone();
        tokio::task::spawn_blocking(move || write_file(&file_path, span_count, &payload))
            .await
            .map_err(io::Error::other)??;
        if let Err(err) = self.sync_directory().await {
            // Not acknowledged, so the caller will offer the data again: do not keep a copy.
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        Ok(seq)
    }

    /// Makes the names of all completed writes durable, sharing one `fsync` among concurrent writers.
    async fn sync_directory(&self) -> io::Result<()> {
        let my_write = self.completed_writes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced_through = self.synced_through.lock().await;
        if *synced_through >= my_write {
            // A directory fsync that started after our file was complete already covered it.
            return Ok(());
        }
        let target = self.completed_writes.load(Ordering::SeqCst);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)??;
        *synced_through = target;
        Ok(())
    }

    /// Reads request `seq` back, checking that it was written completely.
    pub async fn read(&self, seq: u64) -> Result<TraceData, ReadError> {
        let path = self.path_of(seq);
        let read_path = path.clone();
        let contents = tokio::task::spawn_blocking(move || fs::read(&read_path))
            .await
            .map_err(|e| ReadError::Io {
                path: path.clone(),
                source: io::Error::other(e),
            })?
            .map_err(|source| ReadError::Io {
                path: path.clone(),
                source,
            })?;
        decode_file(contents).map_err(|reason| ReadError::Corrupt { path, reason })
    }

    /// Forgets request `seq` (sent, or dropped for good).
    pub async fn remove(&self, seq: u64) {
        let path = self.path_of(seq);
        let removed = tokio::task::spawn_blocking({
            let path = path.clone();
            move || fs::remove_file(path)
        })
        .await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(err)) if err.kind() == io::ErrorKind::NotFound => {}
            Ok(Err(err)) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot delete a sent request from the persistent queue; it will be sent again after a restart");
            }
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot delete a sent request from the persistent queue");
            }
        }
    }
}

fn write_file(path: &Path, span_count: u64, payload: &[u8]) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header[8..16].copy_from_slice(&span_count.to_le_bytes());
    header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    // `create_new`: sequence numbers are never reused, so an existing file means a bug or a second
    // process on the same directory; refuse rather than overwrite queued data.
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let written = file
        .write_all(&header)
        .and_then(|()| file.write_all(payload))
        .and_then(|()| file.sync_all());
    if written.is_err() {
        // Best effort: a partial file would be skipped at the next start anyway.
        let _ = fs::remove_file(path);
    }
    written
}

fn decode_file(contents: Vec<u8>) -> Result<TraceData, String> {
    if contents.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", contents.len()));
    }
    if &contents[0..4] != MAGIC {
        return Err("not a queue file".into());
    }
    let crc = u32::from_le_bytes(contents[4..8].try_into().map_err(|_| "bad header")?);
    let span_count = u64::from_le_bytes(contents[8..16].try_into().map_err(|_| "bad header")?);
    let payload_len = u64::from_le_bytes(contents[16..24].try_into().map_err(|_| "bad header")?);
    let actual_len = (contents.len() - HEADER_LEN) as u64;
    if actual_len != payload_len {
        return Err(format!(
            "payload is {actual_len} bytes, the header says {payload_len}"
        ));
    }
    let payload = Bytes::from(contents).slice(HEADER_LEN..);
    if crc32fast::hash(&payload) != crc {
        return Err("checksum mismatch".into());
    }
    // Validated when it was received; this walk only rebuilds the span count (and would catch a
    // payload damaged in a way the checksum missed).
    let (data, rejected) =
        TraceData::from_request_bytes(payload).map_err(|e| format!("invalid payload: {e}"))?;
    let found = data.span_count() as u64 + rejected.spans;
    if found != span_count {
        return Err(format!("{found} spans, the header says {span_count}"));
    }
    Ok(data)
}
