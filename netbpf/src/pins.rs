//! What a running datapath leaves in bpffs so it outlives its daemon.
//!
//! ```text
//! PIN_DIR/<MAP>                    every map (see netbpf_common::map_names)
//! PIN_DIR/links/<program>@<target> every attachment: a tcx/XDP link on an
//!                                  interface, or a cgroup link
//! ```
//!
//! A pinned link keeps its program attached after the daemon exits (SIGTERM,
//! SIGKILL or a crash), and pinned maps keep the flows, so traffic keeps
//! flowing while no daemon runs. The next daemon adopts both: it reuses the
//! maps (when their layout matches) and swaps its programs into the links
//! atomically. [`down`] removes everything: unpinning a link detaches it.
//!
//! One daemon per pin directory: [`DaemonLock`] is an advisory lock under
//! `/run/netbpf`.

use std::{
    fs, io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use netbpf_common::map_names;

/// Where daemon locks live (tmpfs: they vanish with a reboot, as the
/// datapath does).
const LOCK_DIR: &str = "/run/netbpf";

/// Failures handling pins and the daemon lock.
#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    /// A filesystem operation failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the pin directory.
    #[error(
        "another netbpf daemon is running for {pin_dir} (lock {lock}); stop it first, or pick another --pin-dir"
    )]
    Locked {
        /// The pin directory.
        pin_dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinsError + '_ {
    move |source| PinsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Directory of the link pins.
pub fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

/// Where the link of `program` on `target` (an interface name, or `cgroup`)
/// is pinned.
pub fn link_pin(pin_dir: &Path, program: &str, target: &str) -> PathBuf {
    links_dir(pin_dir).join(format!("{program}@{target}"))
}

/// A pinned link: program, target and pin path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedLinkEntry {
    /// Program name.
    pub program: String,
    /// Interface name or `cgroup`.
    pub target: String,
    /// Pin path.
    pub path: PathBuf,
}

/// Every link pinned under `pin_dir`.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<PinnedLinkEntry>, PinsError> {
    let dir = links_dir(pin_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PinsError::Io { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((program, target)) = name.split_once('@') {
            out.push(PinnedLinkEntry {
                program: program.to_owned(),
                target: target.to_owned(),
                path: entry.path(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Whether a datapath is pinned in `pin_dir` (its maps exist).
pub fn is_pinned(pin_dir: &Path) -> bool {
    pin_dir.join(map_names::CONNTRACK).exists()
}

/// What [`down`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    /// Links unpinned (and so detached).
    pub links: usize,
    /// Maps unpinned.
    pub maps: usize,
}

/// Removes a pinned datapath: links first (which detaches the programs),
/// then maps, then the directories. Missing pieces are fine.
pub fn down(pin_dir: &Path) -> Result<DownReport, PinsError> {
    let mut report = DownReport::default();
    for link in pinned_links(pin_dir)? {
        remove_file(&link.path)?;
        report.links += 1;
    }
    remove_dir(&links_dir(pin_dir))?;
    for name in map_names::ALL {
        if remove_file(&pin_dir.join(name))? {
            report.maps += 1;
        }
    }
    remove_dir(pin_dir)?;
    // The lock file of a datapath that no longer exists.
    let _ = fs::remove_file(DaemonLock::path_for(pin_dir));
    Ok(report)
}

/// Removes a file; `Ok(false)` if it was not there.
pub fn remove_file(path: &Path) -> Result<bool, PinsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PinsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes an empty directory; a missing or non-empty one is left alone.
fn remove_dir(path: &Path) -> Result<(), PinsError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Ok(())
        }
        Err(source) => Err(PinsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The lock a running daemon holds on its pin directory (released when
/// dropped, or when the process dies, so a SIGKILLed daemon never blocks
/// the next one).
#[derive(Debug)]
pub struct DaemonLock {
    _file: fs::File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock for `pin_dir`, or fails if another daemon has it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, PinsError> {
        let dir = Path::new(LOCK_DIR);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = Self::path_for(pin_dir);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a valid, open file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(PinsError::Locked {
                    pin_dir: pin_dir.to_owned(),
                    lock: path,
                });
            }
            return Err(PinsError::Io { path, source: err });
        }
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file for `pin_dir`.
    pub fn path_for(pin_dir: &Path) -> PathBuf {
        let name: String = pin_dir
            .to_string_lossy()
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        Path::new(LOCK_DIR).join(format!("{name}.lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_program_and_target() {
        let p = link_pin(Path::new("/sys/fs/bpf/netbpf"), "netbpf_egress", "eth0");
        assert_eq!(p, Path::new("/sys/fs/bpf/netbpf/links/netbpf_egress@eth0"));
    }

    #[test]
    fn a_second_daemon_is_refused_and_the_lock_frees_on_drop() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root for /run/netbpf");
            return;
        }
        let dir = PathBuf::from(format!("/sys/fs/bpf/nbt-lock-{}", std::process::id()));
        let first = DaemonLock::acquire(&dir).expect("first");
        assert!(matches!(
            DaemonLock::acquire(&dir),
            Err(PinsError::Locked { .. })
        ));
        let path = first.path().to_owned();
        drop(first);
        let again = DaemonLock::acquire(&dir).expect("free again");
        drop(again);
        let _ = fs::remove_file(path);
    }
}
