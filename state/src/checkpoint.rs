//! Checkpoints: for each store of a task, the changelog offset its local
//! state reflects.
//!
//! A checkpoint is written after the stores were flushed to disk, so local
//! state holds at least what it names; restore replays the changelog from
//! there to its end. Replaying records local state already holds is
//! harmless (each changelog record sets a key to a value), so a checkpoint
//! may lag behind local state but never run ahead of it.
//!
//! The file is replaced atomically: written to a temporary file, synced,
//! renamed over the old one, and the directory synced. A reader never sees
//! a half-written checkpoint; a corrupt one (bad checksum) is reported as
//! such, and the runtime then restores from the beginning of the changelog.
//!
//! Formats (the first line says which):
//!
//! - 2 (written now): `brook-checkpoint 2`, then one line per store,
//!   `<changelog topic> <partition> <offset> <store> <store format>`, then
//!   `crc32 <hex>` over everything before it.
//! - 1 (the first format, still read): `1`, a line with the number of
//!   entries, then `<changelog topic> <partition> <offset>` per entry; no
//!   store names (the store format is 1) and no checksum.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The checkpoint format this build writes.
pub const CHECKPOINT_FORMAT: u32 = 2;

/// How stores lay out keys and values on disk in this build. A store
/// written in a later format is refused rather than misread.
pub const STORE_FORMAT: u32 = 1;

/// The checkpoint's file name in a task directory.
pub const CHECKPOINT_FILE: &str = ".checkpoint";

/// One store's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The offset of the next changelog record to restore.
    pub offset: i64,
    /// The store's name (`None` in format 1).
    pub store: Option<String>,
    /// The store's on-disk format.
    pub store_format: u32,
}

/// Offsets by changelog partition (`topic`, `partition`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The entries.
    pub entries: BTreeMap<(String, i32), CheckpointEntry>,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged (bad checksum, unparsable line).
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer brook; this build must not touch that state.
    #[error(
        "checkpoint {path} has format {found}, newer than this build reads (up to {CHECKPOINT_FORMAT}, store format {STORE_FORMAT}); run a newer brook or delete the state directory"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The format found (checkpoint or store format).
        found: u32,
    },
}

impl Checkpoint {
    /// The entry for a changelog partition.
    pub fn offset(&self, topic: &str, partition: i32) -> Option<&CheckpointEntry> {
        self.entries.get(&(topic.to_owned(), partition))
    }

    /// Sets the offset of `store`'s changelog partition.
    pub fn set(&mut self, store: &str, topic: &str, partition: i32, offset: i64) {
        self.entries.insert(
            (topic.to_owned(), partition),
            CheckpointEntry {
                offset,
                store: Some(store.to_owned()),
                store_format: STORE_FORMAT,
            },
        );
    }

    /// Reads the checkpoint at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        let text = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let text = String::from_utf8(text).map_err(|_| corrupt("not UTF-8".into()))?;
        let first = text.lines().next().unwrap_or_default();
        let checkpoint = match first {
            "1" => parse_v1(&text).map_err(corrupt)?,
            line if line.starts_with("brook-checkpoint ") => {
                let version: u32 = line["brook-checkpoint ".len()..]
                    .trim()
                    .parse()
                    .map_err(|_| corrupt(format!("bad header {line:?}")))?;
                if version > CHECKPOINT_FORMAT {
                    return Err(CheckpointError::NewerFormat {
                        path: path.to_owned(),
                        found: version,
                    });
                }
                parse_v2(&text).map_err(corrupt)?
            }
            other => return Err(corrupt(format!("unknown header {other:?}"))),
        };
        if let Some(entry) = checkpoint
            .entries
            .values()
            .find(|e| e.store_format > STORE_FORMAT)
        {
            return Err(CheckpointError::NewerFormat {
                path: path.to_owned(),
                found: entry.store_format,
            });
        }
        Ok(Some(checkpoint))
    }

    /// The file's contents in the current format.
    pub fn to_text(&self) -> String {
        let mut text = format!("brook-checkpoint {CHECKPOINT_FORMAT}\n");
        for ((topic, partition), entry) in &self.entries {
            text.push_str(&format!(
                "{topic} {partition} {} {} {}\n",
                entry.offset,
                entry.store.as_deref().unwrap_or("-"),
                entry.store_format
            ));
        }
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!("crc32 {crc:08x}\n"));
        text
    }

    /// Replaces the checkpoint at `path` atomically and durably.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp).map_err(io)?;
            file.write_all(self.to_text().as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

fn parse_entry(line: &str, fields: usize) -> Result<(String, i32, i64, Vec<&str>), String> {
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != fields {
        return Err(format!(
            "line {line:?} has {} fields, not {fields}",
            parts.len()
        ));
    }
    let partition = parts[1]
        .parse()
        .map_err(|_| format!("bad partition in {line:?}"))?;
    let offset: i64 = parts[2]
        .parse()
        .map_err(|_| format!("bad offset in {line:?}"))?;
    if offset < 0 {
        return Err(format!("negative offset in {line:?}"));
    }
    Ok((parts[0].to_owned(), partition, offset, parts[3..].to_vec()))
}

fn parse_v1(text: &str) -> Result<Checkpoint, String> {
    let mut lines = text.lines().skip(1);
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("missing entry count")?;
    let mut checkpoint = Checkpoint::default();
    for line in lines.by_ref().take(count) {
        let (topic, partition, offset, _) = parse_entry(line, 3)?;
        checkpoint.entries.insert(
            (topic, partition),
            CheckpointEntry {
                offset,
                store: None,
                store_format: 1,
            },
        );
    }
    if checkpoint.entries.len() != count {
        return Err(format!(
            "{count} entries announced, {} found",
            checkpoint.entries.len()
        ));
    }
    Ok(checkpoint)
}

fn parse_v2(text: &str) -> Result<Checkpoint, String> {
    let body_end = text.rfind("crc32 ").ok_or("no checksum line")?;
    let (body, trailer) = text.split_at(body_end);
    let expected = u32::from_str_radix(trailer["crc32 ".len()..].trim(), 16)
        .map_err(|_| "bad checksum line".to_owned())?;
    let actual = crc32fast::hash(body.as_bytes());
    if actual != expected {
        return Err(format!(
            "checksum {actual:08x} does not match {expected:08x}"
        ));
    }
    let mut checkpoint = Checkpoint::default();
    for line in body.lines().skip(1) {
        let (topic, partition, offset, rest) = parse_entry(line, 5)?;
        let store_format = rest[1]
            .parse()
            .map_err(|_| format!("bad store format in {line:?}"))?;
        checkpoint.entries.insert(
            (topic, partition),
            CheckpointEntry {
                offset,
                store: (rest[0] != "-").then(|| rest[0].to_owned()),
                store_format,
            },
        );
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::default();
        c.set("counts", "app-counts-changelog", 3, 1_000);
        c.set("totals", "app-totals-changelog", 3, 0);
        c
    }

    #[test]
    fn round_trips_atomically_replacing_the_old_file() -> Result<(), CheckpointError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CHECKPOINT_FILE);
        assert_eq!(Checkpoint::read(&path)?, None);
        sample().write(&path)?;
        assert_eq!(Checkpoint::read(&path)?, Some(sample()));
        let mut next = sample();
        next.set("counts", "app-counts-changelog", 3, 2_000);
        next.write(&path)?;
        let read = Checkpoint::read(&path)?.expect("a checkpoint");
        assert_eq!(
            read.offset("app-counts-changelog", 3).map(|e| e.offset),
            Some(2_000)
        );
        assert!(!path.with_extension("tmp").exists());
        Ok(())
    }

    #[test]
    fn format_1_is_still_read() -> Result<(), CheckpointError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CHECKPOINT_FILE);
        fs::write(&path, "1\n2\napp-a-changelog 0 17\napp-b-changelog 0 4\n").expect("write");
        let c = Checkpoint::read(&path)?.expect("a checkpoint");
        let a = c.offset("app-a-changelog", 0).expect("entry a");
        assert_eq!(
            (a.offset, a.store.as_deref(), a.store_format),
            (17, None, 1)
        );
        assert_eq!(c.offset("app-b-changelog", 0).map(|e| e.offset), Some(4));
        Ok(())
    }

    #[test]
    fn damaged_and_newer_checkpoints_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(CHECKPOINT_FILE);
        let flipped = sample().to_text().replace("1000", "1001");
        fs::write(&path, flipped).expect("write");
        let err = Checkpoint::read(&path).expect_err("bad checksum");
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");

        fs::write(&path, "1\n3\napp-a-changelog 0 17\n").expect("write");
        let err = Checkpoint::read(&path).expect_err("short");
        assert!(err.to_string().contains("3 entries announced"), "{err}");

        fs::write(&path, "brook-checkpoint 9\ncrc32 0\n").expect("write");
        let err = Checkpoint::read(&path).expect_err("newer");
        assert!(
            matches!(err, CheckpointError::NewerFormat { found: 9, .. }),
            "{err}"
        );

        let newer_store = sample().to_text();
        let body = newer_store
            .lines()
            .take(2)
            .map(|l| l.replace(" counts 1", " counts 7"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let text = format!("{body}crc32 {:08x}\n", crc32fast::hash(body.as_bytes()));
        fs::write(&path, text).expect("write");
        let err = Checkpoint::read(&path).expect_err("newer store");
        assert!(
            matches!(err, CheckpointError::NewerFormat { found: 7, .. }),
            "{err}"
        );
    }
}
