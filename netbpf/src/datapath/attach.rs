//! Attaching the programs: tc links pinned so they outlive the daemon, severed links found and dropped, the cgroup socket hooks.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType,
        cgroup_sock_addr::CgroupSockAddrLink,
    },
};
use log::{info, warn};
use netbpf_common::map_names;

use crate::loader::programs;
use crate::{links, loader, pins};

use super::{error::*, fill::*};

/// A tc program, loaded (verified) if it was not yet.
pub(crate) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    loader::loaded(ebpf, name).map_err(|source| DatapathError::Program { name, source })
}

/// A cgroup sock_addr program, loaded (verified) if it was not yet.
pub(crate) fn sock_addr<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    loader::loaded(ebpf, name).map_err(|source| DatapathError::Program { name, source })
}

/// Where a tc program is attached.
#[derive(Clone, Copy)]
pub(crate) struct TcTarget<'a> {
    pub(crate) ifname: &'a str,
    pub(crate) ifindex: u32,
    pub(crate) attach: TcAttachType,
}

/// Attaches a tc program (loading it first if needed) through a link
/// pinned under `pin_dir`, so it stays attached after the daemon exits. If
/// an earlier daemon pinned that link, the new program replaces the old
/// one in it atomically: no packet sees neither.
pub(crate) fn attach_tc_pinned(
    ebpf: &mut Ebpf,
    name: &'static str,
    target: TcTarget<'_>,
    pin_dir: &Path,
) -> Result<PathBuf, DatapathError> {
    let prog = classifier(ebpf, name)?;
    let pin = pins::link_pin(pin_dir, name, target.ifname);
    match links::attach_tc(prog, target.ifindex, target.attach, &pin)
        .map_err(|source| DatapathError::Link { name, source })?
    {
        links::Attached::Swapped => info!(
            "{name}: new program swapped into the pinned link on {}",
            target.ifname
        ),
        links::Attached::Fresh { severed: true } => warn!(
            "{name}: the pinned link on {} was severed (its interface is gone); attached afresh",
            target.ifname
        ),
        links::Attached::Fresh { severed: false } => {}
    }
    Ok(pin)
}

/// Loads (verifies) the NAT programs a start will attach.
pub(crate) fn load_nat_programs(
    ebpf: &mut Ebpf,
    inside: bool,
    hooks: bool,
) -> Result<(), DatapathError> {
    classifier(ebpf, programs::EGRESS)?;
    classifier(ebpf, programs::INGRESS)?;
    if inside {
        classifier(ebpf, programs::INSIDE)?;
        classifier(ebpf, programs::FAST_OUT)?;
    }
    if hooks {
        for name in programs::SOCK_ADDR {
            sock_addr(ebpf, name)?;
        }
    }
    Ok(())
}

/// Removes the pins of links whose interface (or cgroup) is gone, saying
/// so: an interface or namespace deleted, perhaps made again under the same
/// name, while no daemon ran. The kernel refuses to swap a program into
/// such a link, and it carries no traffic; the maps, and so the flows,
/// stay. Returns how many were removed.
pub(crate) fn drop_severed_links(pin_dir: &Path) -> Result<usize, DatapathError> {
    let mut dropped = 0;
    for (link, state) in pins::link_states(pin_dir)? {
        if state == pins::LinkState::Severed {
            warn!(
                "{} on {}: the pinned link was severed (the interface or its network namespace \
                 was deleted while no daemon ran); dropping it and attaching afresh, the maps and \
                 their flows stay",
                link.program, link.target
            );
            pins::remove_file(&link.path)?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// systems, often `/sys/fs/cgroup/unified` on hybrid ones), from
/// `/proc/self/mounts`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// The cookie of the calling thread's network namespace.
pub fn netns_cookie() -> io::Result<u64> {
    use std::os::fd::AsRawFd as _;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid socket fd, and a buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Attaches the cgroup socket hooks for published ports reached from this
/// network namespace's own processes.
pub(crate) fn attach_sock_hooks(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    pin_dir: &Path,
) -> Result<Vec<PathBuf>, DatapathError> {
    let cg_err = |source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    };
    let cookie = netns_cookie().map_err(cg_err)?;
    let name = map_names::SOCK_NETNS;
    let map = map_mut(ebpf, name)?;
    let mut netns: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
    netns
        .set(0, &cookie, 0)
        .map_err(|source| DatapathError::Map { name, source })?;
    let file = fs::File::open(cgroup).map_err(cg_err)?;
    let mut pinned = Vec::new();
    for name in programs::SOCK_ADDR {
        let err = |source| DatapathError::Program { name, source };
        let prog = sock_addr(ebpf, name)?;
        let pin = pins::link_pin(pin_dir, name, "cgroup");
        if let Some(link) = links::adopt::<CgroupSockAddrLink>(&pin) {
            prog.attach_to_link(link).map_err(err)?;
        } else {
            // A bpf_link (kernel >= 5.7): links on one cgroup always
            // coexist, so several datapaths (one per namespace) can share
            // it; the link API takes no multi-attach flag.
            let id = prog.attach(&file, CgroupAttachMode::Single).map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            links::pin(link, &pin).map_err(|source| DatapathError::Link { name, source })?;
        }
        pinned.push(pin);
    }
    Ok(pinned)
}
