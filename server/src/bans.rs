//! The client names an operator banned (a kick with a ban), and, with
//! `ban_file` set, the small JSON file that keeps them across restarts: a
//! ban meant to last a day must not end with the next deploy.
//!
//! The file is read once at start (bans already over are dropped) and
//! written whole after each ban, through a temporary file renamed over it,
//! so a crash mid-write leaves the old file or the new one, never half of
//! one. It holds names and end times, no secret:
//!
//! ```json
//! {"bans":[{"client":"mallory","until":"2030-01-01T12:00:00Z"}]}
//! ```

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The longest ban: ten years (a longer one would overflow the clock).
pub(crate) const MAX_BAN: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why the ban file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BanFileError {
    /// It exists but could not be read.
    #[error("cannot read the ban file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// It is not the JSON this server writes.
    #[error("the ban file {path} is not a list of bans: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        source: serde_json::Error,
    },
    /// A ban's end is not an RFC 3339 time.
    #[error("the ban file {path}: the ban of '{client}' ends at '{until}', not an RFC 3339 time like 2030-01-01T12:00:00Z")]
    Time {
        /// The file.
        path: PathBuf,
        /// Whose ban.
        client: String,
        /// What it says.
        until: String,
    },
    /// It could not be written (the ban is in force all the same).
    #[error("cannot write the ban file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    bans: Vec<StoredBan>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredBan {
    client: String,
    /// When the ban ends, RFC 3339 UTC (wall time: a restart resets the
    /// monotonic clock the bans run on in memory).
    until: String,
}

/// The bans in force, and where they are kept, if anywhere.
#[derive(Default)]
pub(crate) struct Bans {
    /// Banned names and when each ban ends.
    active: Mutex<HashMap<Arc<str>, Instant>>,
    file: Option<BanFile>,
}

struct BanFile {
    path: PathBuf,
    /// Held from taking the snapshot to the rename, so two bans at once
    /// write in turn and the last one written holds both.
    writing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bans {
    /// The bans kept in `file` that are not over yet; with no file, none.
    /// A file that does not exist yet is written empty, so a place the
    /// server cannot write to is found at start, not at the first ban.
    pub(crate) fn load(file: Option<&Path>) -> Result<Bans, BanFileError> {
        let Some(path) = file else {
            return Ok(Bans::default());
        };
        let bans = Bans {
            active: Mutex::default(),
            file: Some(BanFile {
                path: path.to_owned(),
                writing: Mutex::default(),
            }),
        };
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bans.save()?;
                return Ok(bans);
            }
            Err(source) => {
                return Err(BanFileError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let stored: Stored =
            serde_json::from_slice(&text).map_err(|source| BanFileError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut active = lock(&bans.active);
        for ban in stored.bans {
            let until = humantime::parse_rfc3339(&ban.until).map_err(|_| BanFileError::Time {
                path: path.to_owned(),
                client: ban.client.clone(),
                until: ban.until.clone(),
            })?;
            // Over already (the wall time is past it): dropped.
            if let Ok(left) = until.duration_since(wall) {
                active.insert(ban.client.into(), now + left.min(MAX_BAN));
            }
        }
        drop(active);
        Ok(bans)
    }

    /// Refuses `name`'s logins for `period`, at most [`MAX_BAN`] (replacing
    /// any ban it had). The ban is in force on return; the error says only
    /// that the file could not be written, so it would not outlive a restart.
    pub(crate) fn ban(&self, name: &str, period: Duration) -> Result<(), BanFileError> {
        {
            let mut active = lock(&self.active);
            let now = Instant::now();
            active.retain(|_, until| *until > now);
            active.insert(name.into(), now + period.min(MAX_BAN));
        }
        self.save()
    }

    /// How long `name` stays banned, if it is.
    pub(crate) fn banned_for(&self, name: &str) -> Option<Duration> {
        let left = lock(&self.active)
            .get(name)?
            .saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Writes the bans in force to the file, if there is one. A small file
    /// written rarely (once per ban), so it is written in place of the
    /// caller rather than handed to a thread.
    fn save(&self) -> Result<(), BanFileError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let _turn = lock(&file.writing);
        let stored = {
            let (now, wall) = (Instant::now(), SystemTime::now());
            let mut bans: Vec<StoredBan> = lock(&self.active)
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(client, until)| StoredBan {
                    client: client.to_string(),
                    until: humantime::format_rfc3339_seconds(whole_second_after(
                        wall + until.duration_since(now),
                    ))
                    .to_string(),
                })
                .collect();
            bans.sort_by(|a, b| a.client.cmp(&b.client));
            Stored { bans }
        };
        let mut text = serde_json::to_vec_pretty(&stored).expect("bans serialize");
        text.push(b'\n');
        write_atomically(&file.path, &text).map_err(|source| BanFileError::Write {
            path: file.path.clone(),
            source,
        })
    }
}

/// `t`, rounded up to a whole second: the file keeps seconds, and a ban
/// must not end early for it.
fn whole_second_after(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Replaces `path` with `bytes` whole: written to `PATH.tmp` beside it
/// (the same file system, so the rename is atomic), synced, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename reaches the disk with its directory.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_outlive_a_restart_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = Bans::load(Some(&path)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\n  \"bans\": []\n}\n"
        );
        bans.ban("mallory", Duration::from_secs(3600)).unwrap();
        bans.ban("eve", Duration::from_secs(60)).unwrap();
        bans.ban("eve", Duration::ZERO).unwrap(); // lifted: not written
        let again = Bans::load(Some(&path)).unwrap();
        let left = again.banned_for("mallory").expect("still banned");
        assert!(
            left > Duration::from_secs(3000) && left <= Duration::from_secs(3601),
            "{left:?}"
        );
        assert_eq!(again.banned_for("eve"), None);
        assert!(!dir.path().join("bans.json.tmp").exists());
    }

    #[test]
    fn a_file_that_is_not_bans_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        std::fs::write(&path, r#"{"bans":[{"client":"x","until":"soon"}]}"#).unwrap();
        let e = Bans::load(Some(&path)).err().unwrap().to_string();
        assert!(e.contains("the ban of 'x' ends at 'soon'"), "{e}");
        std::fs::write(&path, "[]").unwrap();
        let e = Bans::load(Some(&path)).err().unwrap().to_string();
        assert!(e.contains("is not a list of bans"), "{e}");
    }
}
