//! The lock every writer of a datapath's rule maps and owner files takes
//! around a read-check-write: the daemon when it fills the maps (start,
//! SIGHUP) and applies Docker's state, and each CNI plugin invocation.
//! Without it a CNI `ADD` could write a port between the daemon's read of
//! the owner files and its fill, and the fill would remove it; or two
//! `ADD`s could both find a port free.
//!
//! It is an `flock` on `/run/netbpf/<pin dir>.rules.lock`, so a holder
//! that dies (SIGKILL, crash) releases it with its file descriptors.

use std::{
    fs, io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

/// How often a waiting taker tries again.
const POLL: Duration = Duration::from_millis(10);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RulesLockError {
    /// Someone held it for longer than the caller would wait.
    #[error("{} is held by another writer of the rules (waited {waited:?})", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The lock file could not be opened or locked.
    #[error("{}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The rules lock of one pin directory, held until dropped.
#[derive(Debug)]
pub struct RulesLock {
    _file: fs::File,
}

impl RulesLock {
    /// Takes the lock for `pin_dir`, waiting at most `wait` for a holder.
    pub fn acquire(pin_dir: &Path, wait: Duration) -> Result<Self, RulesLockError> {
        let path = Self::path_for(pin_dir);
        let io_err = |source| RulesLockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(crate::pins::RUN_DIR).map_err(io_err)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on a valid, open file descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Self { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(io_err(err));
            }
            if start.elapsed() >= wait {
                return Err(RulesLockError::Busy {
                    path,
                    waited: start.elapsed(),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Takes the lock for the daemon: it waits `wait`, then goes on
    /// without it (with a warning) rather than stay stuck behind a
    /// stopped process.
    pub fn for_daemon(pin_dir: &Path, wait: Duration) -> Option<Self> {
        match Self::acquire(pin_dir, wait) {
            Ok(lock) => Some(lock),
            Err(e) => {
                log::warn!("going on without the rules lock: {e}");
                None
            }
        }
    }

    /// The lock file for `pin_dir`.
    pub fn path_for(pin_dir: &Path) -> PathBuf {
        crate::pins::run_file(pin_dir, ".rules.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_waits_then_gives_up() {
        let pin_dir = PathBuf::from(format!("/tmp/netbpf-ruleslock-{}", std::process::id()));
        if !nix::unistd::geteuid().is_root() && std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED a_second_taker_waits_then_gives_up: needs root (/run/netbpf)");
            return;
        }
        let held = RulesLock::acquire(&pin_dir, Duration::ZERO).expect("free");
        let again = RulesLock::acquire(&pin_dir, Duration::from_millis(30));
        assert!(
            matches!(again, Err(RulesLockError::Busy { .. })),
            "{again:?}"
        );
        drop(held);
        RulesLock::acquire(&pin_dir, Duration::ZERO).expect("free once dropped");
        let _ = fs::remove_file(RulesLock::path_for(&pin_dir));
    }
}
