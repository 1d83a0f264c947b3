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

/// Where the files that belong to one pinned datapath live besides its
/// pins (the daemon lock, the rules lock, the rule owners): tmpfs, so they
/// vanish with a reboot, as the datapath does.
pub const RUN_DIR: &str = "/run/netbpf";

/// `RUN_DIR/<pin dir with '/' as '_'><suffix>`: a file or directory that
/// belongs to the datapath pinned in `pin_dir`.
pub fn run_file(pin_dir: &Path, suffix: &str) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    Path::new(RUN_DIR).join(format!("{name}{suffix}"))
}

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

/// Whether a pinned link still has something to be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Attached to its interface or cgroup.
    Attached,
    /// Its interface or cgroup is gone (deleted, or its network namespace
    /// was): the kernel keeps the link, attached to nothing, and refuses to
    /// update it (`ENOLINK`, "Link has been severed"). An interface made
    /// again under the same name is another device, with nothing attached.
    Severed,
}

/// The state of the link pinned at `path`, from the kernel's description
/// of it (`/proc/self/fdinfo`): a tcx or XDP link whose device is gone
/// shows `ifindex: 0`, a cgroup link whose cgroup is gone `cgroup_id: 0`.
pub fn link_state(path: &Path) -> Result<LinkState, PinsError> {
    let fd = obj_get(path).map_err(io_err(path))?;
    let fdinfo = PathBuf::from(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
    let text = fs::read_to_string(&fdinfo).map_err(io_err(&fdinfo))?;
    Ok(parse_link_state(&text))
}

/// [`LinkState`] from a link's fdinfo text.
fn parse_link_state(fdinfo: &str) -> LinkState {
    let severed = fdinfo.lines().any(|line| {
        let mut f = line.split(':');
        matches!(
            (f.next().map(str::trim), f.next().map(str::trim)),
            (Some("ifindex" | "cgroup_id"), Some("0"))
        )
    });
    if severed {
        LinkState::Severed
    } else {
        LinkState::Attached
    }
}

/// Every pinned link with its state.
pub fn link_states(pin_dir: &Path) -> Result<Vec<(PinnedLinkEntry, LinkState)>, PinsError> {
    pinned_links(pin_dir)?
        .into_iter()
        .map(|link| {
            let state = link_state(&link.path)?;
            Ok((link, state))
        })
        .collect()
}

/// What the read commands say before answering from the maps of a
/// datapath that passes no traffic: `None` when a program is attached to
/// an uplink (or nothing is pinned).
pub fn detached_warning(pin_dir: &Path) -> Result<Option<String>, PinsError> {
    if !is_pinned(pin_dir) {
        return Ok(None);
    }
    let links = link_states(pin_dir)?;
    let uplink = |l: &PinnedLinkEntry| UPLINK_PROGRAMS.contains(&l.program.as_str());
    if links
        .iter()
        .any(|(l, s)| uplink(l) && *s == LinkState::Attached)
    {
        return Ok(None);
    }
    let severed: Vec<String> = links
        .iter()
        .filter(|(_, s)| *s == LinkState::Severed)
        .map(|(l, _)| format!("{} on {}", l.program, l.target))
        .collect();
    let why = if severed.is_empty() {
        "it has no pinned links".to_owned()
    } else {
        format!(
            "its links were severed (the interface or its namespace was deleted): {}",
            severed.join(", ")
        )
    };
    Ok(Some(format!(
        "the datapath pinned in {} is attached to no uplink: {why}. What follows comes from its \
         maps, and no traffic passes through it; start the daemon to attach it again, or run \
         `netbpf down` to remove it",
        pin_dir.display()
    )))
}

/// The programs a datapath attaches to its uplink.
const UPLINK_PROGRAMS: [&str; 2] = ["netbpf_egress", "netbpf_ingress"];

/// `BPF_OBJ_GET`: a descriptor for the object pinned at `path`. aya's
/// `PinnedLink` keeps its descriptor private, and the kernel describes a
/// link's target only through the descriptor.
fn obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    /// The `BPF_OBJ_GET` part of `union bpf_attr`.
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let attr = ObjGetAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute of the size passed,
    // and `cpath` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) })
}

/// `BPF_LINK_DETACH`: detaches the link pinned at `path` now. Removing the
/// pin alone detaches it only when the kernel frees the link, which it
/// defers to a work queue: for a moment after `down` the programs would
/// still see packets.
pub(crate) fn link_detach(path: &Path) -> io::Result<()> {
    /// The `BPF_LINK_DETACH` part of `union bpf_attr`.
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    const BPF_LINK_DETACH: libc::c_long = 34;
    let fd = obj_get(path)?;
    let attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: `attr` is a valid BPF_LINK_DETACH attribute of the size
    // passed, and `fd` is open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &attr as *const LinkDetachAttr,
            std::mem::size_of::<LinkDetachAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        // A severed link (its interface gone) is detached already.
        if let Err(e) = link_detach(&link.path)
            && e.raw_os_error() != Some(libc::ENOLINK)
        {
            return Err(PinsError::Io {
                path: link.path,
                source: e,
            });
        }
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
        let dir = Path::new(RUN_DIR);
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
        run_file(pin_dir, ".lock")
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
    fn severed_links_are_told_by_their_fdinfo() {
        let tcx = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1\nlink_type:\ttcx\n\
                   link_id:\t7\nprog_tag:\tabc\nprog_id:\t42\nifindex:\t0\nattach_type:\t47 (tcx_egress)\n";
        assert_eq!(parse_link_state(tcx), LinkState::Severed);
        let live = tcx.replace("ifindex:\t0", "ifindex:\t12");
        assert_eq!(parse_link_state(&live), LinkState::Attached);
        assert_eq!(
            parse_link_state("link_type:\tcgroup\ncgroup_id:\t0\n"),
            LinkState::Severed
        );
        assert_eq!(
            parse_link_state("link_type:\tcgroup\ncgroup_id:\t1234\n"),
            LinkState::Attached
        );
    }
}
