//! The write-ahead log: every acknowledged request is in it until its block is written.
//!
//! Segments are files `<seq>.wal` of records `[len u32][crc32 u32][body]`, the body being
//! `[tenant len u16][tenant][encoded ExportTraceServiceRequest]` (little endian). One writer
//! thread appends; appends that arrive while it writes are grouped and share one fsync, so the
//! cost of `fsync: always` is one fsync per group, not per request. On open, every segment is
//! replayed; a torn record at the end of the last segment (a crash mid-write) is cut off.
//! Segments are deleted by the store once the spans in them are in blocks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// When appends reach the disk, and so what an acknowledged append survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every append is fsynced before it is acknowledged (appends arriving together share one
    /// fsync): it survives a process crash and a power loss.
    Always,
    /// Appends are acknowledged once written, and fsynced at most this long after: a process
    /// crash loses nothing, a power loss at most this much.
    Interval(Duration),
    /// The store never fsyncs; the OS writes back when it likes (Linux: within about 30 s).
    Never,
}

/// One replayed record.
pub struct WalRecord {
    pub tenant: String,
    pub data: Bytes,
}

enum Command {
    Append {
        tenant: String,
        data: Bytes,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Closes the current segment and starts the next; answers the closed segment's number.
    Rotate {
        done: oneshot::Sender<io::Result<u64>>,
    },
}

pub struct Wal {
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

impl Wal {
    /// Opens the log in `dir` (created if missing), returning it and the records of the previous
    /// run, oldest first. New appends go to a fresh segment.
    pub fn open(dir: &Path, fsync: Fsync) -> io::Result<(Wal, Vec<WalRecord>)> {
        fs::create_dir_all(dir)?;
        let existing = segments(dir)?;
        let mut records = Vec::new();
        for (i, seq) in existing.iter().enumerate() {
            let last = i + 1 == existing.len();
            replay_segment(&segment_path(dir, *seq), last, &mut records)?;
        }
        let next = existing.last().map_or(1, |s| s + 1);
        let file = open_segment(dir, next)?;
        let (commands, receiver) = mpsc::channel();
        let writer_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("threadline-wal".into())
            .spawn(move || run_writer(writer_dir, file, next, fsync, receiver))?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                commands,
            },
            records,
        ))
    }

    /// Appends one request; returns once it is written (and fsynced, with `fsync: always`).
    pub async fn append(&self, tenant: &str, data: Bytes) -> io::Result<()> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Append {
                tenant: tenant.to_string(),
                data,
                done,
            })
            .map_err(|_| io::Error::other("the WAL writer stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the WAL writer stopped"))?
    }

    /// Starts a new segment; returns the number of the one just closed.
    pub async fn rotate(&self) -> io::Result<u64> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Rotate { done })
            .map_err(|_| io::Error::other("the WAL writer stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the WAL writer stopped"))?
    }

    /// Deletes the segments up to and including `seq` (their data is in blocks now).
    pub fn remove_through(&self, seq: u64) -> io::Result<()> {
        for old in segments(&self.dir)? {
            if old <= seq {
                fs::remove_file(segment_path(&self.dir, old))?;
            }
        }
        Ok(())
    }
}

fn open_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, seq))?;
    // The new file's directory entry must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

fn encode_record(tenant: &str, data: &[u8], out: &mut Vec<u8>) {
    let tenant = &tenant.as_bytes()[..tenant.len().min(u16::MAX as usize)];
    let body_len = 2 + tenant.len() + data.len();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(tenant.len() as u16).to_le_bytes());
    hasher.update(tenant);
    hasher.update(data);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant);
    out.extend_from_slice(data);
}

fn run_writer(
    dir: PathBuf,
    mut file: File,
    mut seq: u64,
    fsync: Fsync,
    commands: mpsc::Receiver<Command>,
) {
    let mut buffer = Vec::new();
    // With `Fsync::Interval`: since when written records wait for an fsync.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let next = match (fsync, unsynced_since) {
            (Fsync::Interval(every), Some(since)) => {
                commands.recv_timeout(every.saturating_sub(since.elapsed()))
            }
            _ => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let first = match next {
            Ok(command) => command,
            Err(RecvTimeoutError::Timeout) => {
                sync_pending(&file, &mut unsynced_since);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                sync_pending(&file, &mut unsynced_since);
                return;
            }
        };
        // Take whatever else is waiting: one write and one fsync for the whole group.
        let mut batch = vec![first];
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let mut waiting = Vec::new();
        for command in batch {
            match command {
                Command::Append { tenant, data, done } => {
                    encode_record(&tenant, &data, &mut buffer);
                    waiting.push(done);
                }
                Command::Rotate { done } => {
                    let result = flush(&mut file, &mut buffer, fsync, &mut unsynced_since);
                    answer_all(&mut waiting, &result);
                    // A closed segment is durable whatever the policy's timing.
                    sync_pending(&file, &mut unsynced_since);
                    let rotated = result.and_then(|()| {
                        let next = open_segment(&dir, seq + 1)?;
                        file = next;
                        seq += 1;
                        Ok(seq - 1)
                    });
                    let _ = done.send(rotated);
                }
            }
        }
        if !waiting.is_empty() {
            let result = flush(&mut file, &mut buffer, fsync, &mut unsynced_since);
            answer_all(&mut waiting, &result);
        }
    }
}

/// Writes the buffered records, then fsyncs as the policy says.
fn flush(
    file: &mut File,
    buffer: &mut Vec<u8>,
    fsync: Fsync,
    unsynced_since: &mut Option<Instant>,
) -> io::Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    let written = file.write_all(buffer);
    buffer.clear();
    written?;
    match fsync {
        Fsync::Always => file.sync_data(),
        Fsync::Interval(every) => {
            let since = *unsynced_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= every {
                *unsynced_since = None;
                file.sync_data()
            } else {
                Ok(())
            }
        }
        Fsync::Never => Ok(()),
    }
}

/// Fsyncs records written under `Fsync::Interval` and not synced yet.
fn sync_pending(file: &File, unsynced_since: &mut Option<Instant>) {
    if unsynced_since.take().is_some() {
        if let Err(err) = file.sync_data() {
            tracing::error!(error = %err, "fsync of the WAL failed");
        }
    }
}

fn answer_all(waiting: &mut Vec<oneshot::Sender<io::Result<()>>>, result: &io::Result<()>) {
    for done in waiting.drain(..) {
        let _ = done.send(match result {
            Ok(()) => Ok(()),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        });
    }
}

/// Reads every whole record of a segment. A damaged or torn record ends the segment; in the last
/// segment it is cut off (it was never acknowledged), elsewhere it is reported.
fn replay_segment(path: &Path, last: bool, records: &mut Vec<WalRecord>) -> io::Result<()> {
    let contents = Bytes::from(fs::read(path)?);
    let (replayed, good_len) = parse_segment(&contents);
    if good_len < contents.len() {
        tracing::warn!(segment = %path.display(), offset = good_len, "WAL record damaged or torn; the segment ends here");
        if last {
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(good_len as u64)?;
        }
    }
    records.extend(replayed);
    Ok(())
}

/// The records of one segment's bytes, up to the first damaged or torn one, and the length of
/// the good part. A length field is checked against what is left before anything is allocated
/// or sliced, so a corrupted header costs nothing.
pub fn parse_segment(contents: &Bytes) -> (Vec<WalRecord>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = contents.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = contents.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        if len < 2 || crc32fast::hash(body) != crc {
            break;
        }
        let tenant_len = u16::from_le_bytes([body[0], body[1]]) as usize;
        if 2 + tenant_len > len {
            break;
        }
        let tenant = String::from_utf8_lossy(&body[2..2 + tenant_len]).into_owned();
        let data = contents.slice(at + 8 + 2 + tenant_len..at + 8 + len);
        records.push(WalRecord { tenant, data });
        at += 8 + len;
    }
    (records, at)
}
