//! Whether this process sees the host's `/sys`: a daemon started under
//! `ip netns exec` does not, and nothing else would tell its user why its
//! pins and its cgroup hooks went missing.
//!
//! `ip netns exec NAME` unshares the mount namespace, detaches `/sys` and
//! mounts a fresh sysfs there (so that `/sys/class/net` lists the
//! namespace's interfaces). Under it `/sys/fs/bpf` and the cgroup v2 mount
//! are gone: the daemon mounts a bpffs of its own that no other process
//! sees (`netbpf down`, `stats`, a restarted daemon), which dies with the
//! daemon's mount namespace and takes the pinned datapath with it, and it
//! finds no cgroup v2 hierarchy to attach the host-socket hooks to.
//! `netbpf --netns NAME` enters only the network namespace and keeps the
//! caller's mounts.
//!
//! The test, on `/proc/<pid>/mountinfo`:
//! - `/sys` here is a different sysfs instance (device number) from the one
//!   PID 1 sees: this process has its own mount namespace and its own
//!   `/sys`, whoever made it. Comparing `/proc/self/ns/mnt` with
//!   `/proc/1/ns/mnt` would say less (a private mount namespace that kept
//!   the host's `/sys` and bpffs is harmless) and needs ptrace rights over
//!   PID 1 that some sandboxes refuse, while PID 1's `mountinfo` stays
//!   readable.
//! - When PID 1's mounts cannot be read, the mark iproute2 leaves: it
//!   mounts that sysfs with the namespace's name as its source (`mount(name,
//!   "/sys", "sysfs", ...)` in `netns_switch`), where the host's says
//!   `sysfs`. A source naming an entry of `/run/netns` is `ip netns exec`.
//!
//! In a container with its own PID namespace, PID 1 is the container's init
//! and shares its mounts: no warning there.

use std::{fs, path::Path};

/// Where `ip netns add` keeps its namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// This process's `/sys` is not the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignSys {
    /// The network namespace `ip netns exec` was given, when its mark is
    /// there (the sysfs source names an entry of `/run/netns`).
    pub netns: Option<String>,
}

impl ForeignSys {
    /// What to tell the user: what happened, what it breaks, what to run
    /// instead.
    pub fn warning(&self, pin_dir: &Path) -> String {
        let (how, name) = match &self.netns {
            Some(name) => (format!("`ip netns exec {name}`"), name.as_str()),
            None => (
                "a mount namespace with its own /sys (as `ip netns exec` makes)".to_owned(),
                "NAME",
            ),
        };
        format!(
            "started under {how}: /sys here is not the host's, so the pins in {} and the \
             bpffs under them are invisible to every other netbpf command (down, stats, a \
             restarted daemon) and vanish with this process, and there is no cgroup v2 \
             mount for the host-socket hooks (the host cannot reach its own published \
             ports). Start it as `netbpf daemon --netns {name} ...` instead: that enters \
             the network namespace and keeps the host's mounts",
            pin_dir.display()
        )
    }
}

/// Checks this process against PID 1 (see the module docs). `None` when
/// `/sys` is the host's, or when it cannot be told.
pub fn foreign_sys() -> Option<ForeignSys> {
    let own = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let init = fs::read_to_string("/proc/1/mountinfo").ok();
    foreign_sys_from(&own, init.as_deref(), |name| {
        Path::new(NETNS_RUN_DIR).join(name).exists()
    })
}

/// The test on the text of two `mountinfo` files: this process's `own`,
/// PID 1's `init` (if readable); `is_netns` says whether a name is an entry
/// of `/run/netns`.
pub fn foreign_sys_from(
    own: &str,
    init: Option<&str>,
    is_netns: impl Fn(&str) -> bool,
) -> Option<ForeignSys> {
    let mine = sys_mount(own)?;
    let netns = (mine.source != "sysfs"
        && !mine.source.is_empty()
        && !mine.source.contains('/')
        && is_netns(mine.source))
    .then(|| mine.source.to_owned());
    let foreign = match init.and_then(sys_mount) {
        Some(theirs) => theirs.device != mine.device,
        None => netns.is_some(),
    };
    foreign.then_some(ForeignSys { netns })
}

/// The sysfs mounted on `/sys`, from one `mountinfo` line.
#[derive(Debug, PartialEq, Eq)]
struct SysMount<'a> {
    /// `major:minor` of the sysfs instance.
    device: &'a str,
    /// The mount source (`sysfs` on a host; the namespace's name under
    /// `ip netns exec`).
    source: &'a str,
}

/// The last (topmost) sysfs mounted on `/sys` in a `mountinfo` text.
///
/// A line is `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] -
/// FSTYPE SOURCE SUPEROPTIONS` (proc(5)).
fn sys_mount(mountinfo: &str) -> Option<SysMount<'_>> {
    mountinfo.lines().rev().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        let mut fields = after.split(' ');
        let (fs_type, source) = (fields.next()?, fields.next()?);
        (mount_point == "/sys" && fs_type == "sysfs").then_some(SysMount { device, source })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PID 1's mounts on this kind of machine (trimmed).
    const HOST: &str = "\
23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw
96 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw
40 23 0:35 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
";

    /// What `ip netns exec nbt-x` leaves: a fresh sysfs named after the
    /// namespace, no bpffs, no cgroup2.
    const NETNS_EXEC: &str = "\
200 199 0:27 / / rw,relatime master:1 - ext4 /dev/vda1 rw
51 48 0:41 / /sys rw,relatime - sysfs nbt-x rw
";

    fn is_nbt_x(name: &str) -> bool {
        name == "nbt-x"
    }

    #[test]
    fn host_and_netns_flag_see_the_hosts_sys() {
        // `--netns` keeps the mounts: same lines as PID 1's.
        assert_eq!(foreign_sys_from(HOST, Some(HOST), is_nbt_x), None);
        // Without PID 1's mounts, a sysfs named "sysfs" is not suspicious.
        assert_eq!(foreign_sys_from(HOST, None, is_nbt_x), None);
    }

    #[test]
    fn ip_netns_exec_is_named() {
        let found = foreign_sys_from(NETNS_EXEC, Some(HOST), is_nbt_x);
        assert_eq!(
            found,
            Some(ForeignSys {
                netns: Some("nbt-x".into())
            })
        );
        // PID 1's mounts unreadable: iproute2's mark is enough.
        assert_eq!(foreign_sys_from(NETNS_EXEC, None, is_nbt_x), found);
        let msg = found.unwrap().warning(Path::new("/sys/fs/bpf/netbpf"));
        assert!(msg.contains("`ip netns exec nbt-x`"), "{msg}");
        assert!(msg.contains("netbpf daemon --netns nbt-x"), "{msg}");
        assert!(msg.contains("/sys/fs/bpf/netbpf"), "{msg}");
    }

    #[test]
    fn another_sysfs_without_the_mark_is_foreign_but_unnamed() {
        let own = "51 48 0:41 / /sys rw,relatime - sysfs sysfs rw\n";
        let found = foreign_sys_from(own, Some(HOST), is_nbt_x);
        assert_eq!(found, Some(ForeignSys { netns: None }));
        let msg = found.unwrap().warning(Path::new("/p"));
        assert!(msg.contains("--netns NAME"), "{msg}");
        // A source that is not a namespace is no mark.
        let own = "51 48 0:41 / /sys rw,relatime - sysfs other rw\n";
        assert_eq!(foreign_sys_from(own, None, is_nbt_x), None);
    }

    #[test]
    fn the_topmost_sys_counts_and_no_sys_says_nothing() {
        // `ip netns exec` mounts over a /sys it could not detach.
        let own = format!("{HOST}51 23 0:41 / /sys rw - sysfs nbt-x rw\n");
        assert_eq!(
            sys_mount(&own),
            Some(SysMount {
                device: "0:41",
                source: "nbt-x"
            })
        );
        assert_eq!(foreign_sys_from("", Some(HOST), is_nbt_x), None);
        // Optional fields (shared:N) do not shift the fields after " - ".
        assert_eq!(sys_mount(HOST).map(|m| m.device), Some("0:22"));
    }
}
