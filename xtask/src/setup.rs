//! `cargo xtask setup`: checks for, and installs, what building and testing
//! netbpf needs.
//!
//! Each check is cheap (a file test or a quick `--version`), so when
//! everything is present setup prints one line and returns at once. Each
//! install prints one line saying what and why, then the command it runs.
//! The versions come from docs/toolchain.md (the set verified to work
//! together): the pinned nightly, whose LLVM is 22; Debian's LLVM 22
//! development files; bpf-linker 0.13 built against that LLVM.

use std::{ffi::OsString, fs, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    cmd::{self, Cmd},
    toolchain::{TOOLCHAIN_FILE, Toolchain},
};

/// Major version of the LLVM that bpf-linker is built against. It must be at
/// least the LLVM of the pinned rustc (22 for `nightly-2026-08-01`).
pub const LLVM_MAJOR: u32 = 22;

/// Where Debian's `llvm-22-dev` installs LLVM; bpf-linker's build reads it
/// from `LLVM_PREFIX`.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Files under [`LLVM_PREFIX`] whose presence means the LLVM development
/// files are installed: `llvm-config` (package `llvm-22`) and the unversioned
/// `libLLVM.so` link (package `llvm-22-dev`).
const LLVM_FILES: &[&str] = &["bin/llvm-config", "lib/libLLVM.so"];

/// Debian packages that provide what bpf-linker's build needs from LLVM.
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// The bpf-linker version installed when it is missing.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Any bpf-linker `major.minor.*` with this major and minor is accepted.
const BPF_LINKER_SERIES: (u64, u64) = (0, 13);

/// The bpf-linker cargo feature selecting the LLVM it links (its default,
/// `llvm-23`, has no Debian package).
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// The Debian package manager; installs need it and root.
const APT_GET: &str = "/usr/bin/apt-get";

/// A command-line tool from a Debian package, needed at run or test time.
pub struct DebianTool {
    /// Executable looked up on `PATH` (plus the sbin directories).
    pub binary: &'static str,
    /// Debian package that provides it.
    pub package: &'static str,
    /// Why netbpf needs it, printed when it is installed.
    pub why: &'static str,
}

/// Runtime and test tools. Add entries here when the lab or the tests start
/// using another tool (toolchain.md lists what Debian has: iptables,
/// conntrack, ncat, socat, tcpdump, bpftool, ...).
pub const DEBIAN_TOOLS: &[DebianTool] = &[
    DebianTool {
        binary: "ip",
        package: "iproute2",
        why: "the lab and the tests create network namespaces, veths and routes with `ip`",
    },
    DebianTool {
        binary: "sysctl",
        package: "procps",
        why: "the lab and the tests set forwarding and proxy-ARP sysctls inside their namespaces",
    },
    DebianTool {
        binary: "ncat",
        package: "ncat",
        why: "the published-port tests connect to the lab's published ports from the outside machine with a real client (tests/publish.rs)",
    },
    DebianTool {
        binary: "ping",
        package: "iputils-ping",
        why: "the IPv6 routing test pings a routed container's IPv6 address from a peer on the segment with `ping -6` (tests/routing6.rs)",
    },
    DebianTool {
        binary: "traceroute",
        package: "traceroute",
        why: "the tests trace from a container through the NAT with UDP, ICMP and TCP probes, which needs ICMP errors translated back (tests/publish.rs)",
    },
    DebianTool {
        binary: "tracepath",
        package: "iputils-tracepath",
        why: "the tests run tracepath from a container to check that time-exceeded and fragmentation-needed errors reach it through the NAT (tests/publish.rs)",
    },
    DebianTool {
        binary: "iptables",
        package: "iptables",
        why: "the import equivalence test applies Docker-shaped iptables NAT rules inside a lab namespace and compares them with netbpf running the imported config (tests/import.rs)",
    },
    DebianTool {
        binary: "bird",
        package: "bird2",
        why: "the multi-host lab and tests/bgp.rs run a BIRD 2 daemon per host to carry container routes between hosts over BGP",
    },
    DebianTool {
        binary: "trafgen",
        package: "netsniff-ng",
        why: "`cargo xtask bench` sends its router traffic with trafgen (a random source per packet, so every packet is a new flow) to compare netbpf with iptables-nft (docs/performance.md)",
    },
    DebianTool {
        binary: "iperf3",
        package: "iperf3",
        why: "`cargo xtask bench` measures TCP throughput through the NAT with iperf3 for netbpf (fast path and through the stack) and iptables-nft (docs/performance.md)",
    },
    DebianTool {
        binary: "ethtool",
        package: "ethtool",
        why: "`cargo xtask bench` turns GRO on at the router bench's receiving veths, which gives them the NAPI that XDP redirects into a veth need (docs/performance.md)",
    },
    DebianTool {
        binary: "dockerd",
        package: "docker.io",
        why: "tests/docker.rs runs a real dockerd (its own data root and socket, inside a test namespace) that the daemon's [docker] section follows",
    },
    DebianTool {
        binary: "busybox",
        package: "busybox-static",
        why: "tests/docker.rs makes its container image with `docker import` from a directory holding a static busybox (no registry needed)",
    },
    DebianTool {
        binary: "podman",
        package: "podman",
        why: "tests/cni_podman.rs runs Debian's podman (CNI backend, its own root, runroot and CNI config dir, inside a test namespace) with netbpf as the CNI plugin that publishes its ports",
    },
    DebianTool {
        binary: "/usr/lib/cni/bridge",
        package: "containernetworking-plugins",
        why: "tests/cni_podman.rs chains Debian's reference `bridge` and `host-local` CNI plugins before netbpf's (no `portmap`)",
    },
];

/// State of one `setup` run.
struct Setup<'a> {
    /// Workspace root, where nested cargo commands run.
    root: &'a Path,
    /// The pinned toolchain.
    toolchain: &'a Toolchain,
    /// The `PATH` children get, also used to look tools up.
    path: OsString,
    /// Whether `apt-get update` already ran in this setup.
    apt_updated: bool,
    /// Short descriptions of what is present, for the summary line.
    present: Vec<String>,
    /// How many things were installed.
    installed: usize,
}

/// Checks everything in order and installs what is missing. Prints
/// `setup: all present (...)` when nothing had to be installed.
pub fn ensure(root: &Path, toolchain: &Toolchain) -> Result<()> {
    let mut setup = Setup {
        root,
        toolchain,
        path: cmd::search_path(),
        apt_updated: false,
        present: Vec::new(),
        installed: 0,
    };
    setup.rust_toolchain()?;
    setup.llvm()?;
    setup.bpf_linker()?;
    setup.debian_tools()?;
    let summary = setup.present.join(", ");
    if setup.installed == 0 {
        eprintln!("setup: all present ({summary})");
    } else {
        eprintln!("setup: done, installed {} ({summary})", setup.installed);
    }
    Ok(())
}

impl Setup<'_> {
    /// (a) The pinned toolchain with its components.
    fn rust_toolchain(&mut self) -> Result<()> {
        let channel = &self.toolchain.channel;
        let components = &self.toolchain.components;
        let listed = Cmd::new("rustup")
            .args(["toolchain", "list"])
            .probe()?
            .ok_or_else(|| {
                anyhow!(
                    "rustup is not on PATH; it is needed to install the pinned toolchain \
                     {channel} (from {TOOLCHAIN_FILE}). Install rustup (https://rustup.rs) \
                     and run `cargo xtask setup` again"
                )
            })?;

        let triple = if let Some(triple) = find_toolchain(&listed, channel) {
            triple.to_owned()
        } else {
            eprintln!(
                "setup: installing Rust toolchain {channel} with {}: pinned in {}, it builds \
                 the eBPF programs (rust-src is needed for -Z build-std=core)",
                components.join(", "),
                self.toolchain.origin
            );
            Cmd::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    channel,
                    "--profile",
                    "minimal",
                    "-c",
                ])
                .arg(components.join(","))
                .env_quiet("RUSTUP_AUTO_INSTALL", "1")
                .run()
                .with_context(|| format!("installing the Rust toolchain {channel}"))?;
            self.installed += 1;
            self.installed_triple()?
        };
        let missing = self.missing_components(&triple)?;
        if !missing.is_empty() {
            eprintln!(
                "setup: adding {} to {channel}: listed in {TOOLCHAIN_FILE} (rust-src for \
                 -Z build-std=core, rustfmt and clippy for `cargo xtask lint`)",
                missing.join(", ")
            );
            Cmd::new("rustup")
                .args(["component", "add", "--toolchain", channel])
                .args(&missing)
                .run()
                .with_context(|| format!("adding components to {channel}"))?;
            self.installed += 1;
            let still = self.missing_components(&triple)?;
            if !still.is_empty() {
                bail!(
                    "{channel} still lacks {} after `rustup component add`",
                    still.join(", ")
                );
            }
        }
        self.present
            .push(format!("{channel} + {}", components.join(" + ")));
        Ok(())
    }

    /// The host triple of the installed pinned toolchain (see
    /// [`find_toolchain`]); an error if it is not installed.
    fn installed_triple(&self) -> Result<String> {
        let channel = &self.toolchain.channel;
        let listed = Cmd::new("rustup")
            .args(["toolchain", "list"])
            .probe()
            .and_then(|out| out.ok_or_else(|| anyhow!("rustup is not on PATH")))
            .context("listing the Rust toolchains")?;
        find_toolchain(&listed, channel)
            .map(str::to_owned)
            .with_context(|| format!("the Rust toolchain {channel} is not installed"))
    }

    /// Components of the pinned toolchain that are not installed; `triple`
    /// is its host triple.
    fn missing_components(&self, triple: &str) -> Result<Vec<String>> {
        let channel = &self.toolchain.channel;
        let installed = Cmd::new("rustup")
            .args(["component", "list", "--installed", "--toolchain", channel])
            .probe()
            .and_then(|out| out.ok_or_else(|| anyhow!("rustup is not on PATH")))
            .with_context(|| format!("listing the components of {channel}"))?;
        Ok(self
            .toolchain
            .components
            .iter()
            .filter(|want| !has_component(&installed, want, triple))
            .cloned()
            .collect())
    }

    /// (b) Debian's LLVM development files, which bpf-linker builds against.
    fn llvm(&mut self) -> Result<()> {
        let missing: Vec<String> = LLVM_FILES
            .iter()
            .map(|file| Path::new(LLVM_PREFIX).join(file))
            .filter(|file| !file.exists())
            .map(|file| file.display().to_string())
            .collect();
        if !missing.is_empty() {
            let what = format!(
                "LLVM {LLVM_MAJOR} development files ({} missing)",
                missing.join(", ")
            );
            let line = format!(
                "setup: installing {}: {what}; bpf-linker is built and linked against them",
                LLVM_PACKAGES.join(" ")
            );
            self.apt_install(LLVM_PACKAGES, &what, &[line])?;
            if let Some(file) = LLVM_FILES
                .iter()
                .map(|file| Path::new(LLVM_PREFIX).join(file))
                .find(|file| !file.exists())
            {
                bail!(
                    "{} is still missing after installing {}",
                    file.display(),
                    LLVM_PACKAGES.join(" ")
                );
            }
        }
        self.present.push(format!("LLVM {LLVM_MAJOR}"));
        Ok(())
    }

    /// (c) bpf-linker 0.13, built for LLVM 22, as the build will find it.
    fn bpf_linker(&mut self) -> Result<()> {
        let problem = match self.bpf_linker_version() {
            Ok(version) => {
                self.present.push(format!("bpf-linker {version}"));
                return Ok(());
            }
            Err(problem) => problem,
        };
        let channel = &self.toolchain.channel;
        eprintln!(
            "setup: installing bpf-linker {BPF_LINKER_VERSION} for LLVM {LLVM_MAJOR} ({problem}): \
             it links the eBPF object files; takes a minute or two"
        );
        Cmd::cargo(channel, self.root)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .run()
            .context("installing bpf-linker")?;
        self.installed += 1;
        let version = self
            .bpf_linker_version()
            .map_err(|problem| anyhow!("after `cargo install bpf-linker`: {problem}"))?;
        self.present.push(format!("bpf-linker {version}"));
        Ok(())
    }

    /// The version of the bpf-linker a build would use, if it is an accepted
    /// one; otherwise a description of what is wrong.
    fn bpf_linker_version(&self) -> Result<String, String> {
        let Some(binary) = cmd::which("bpf-linker", &self.path) else {
            return Err("not found on PATH or in the cargo bin directory".to_owned());
        };
        let output = match Cmd::new(&binary).arg("--version").probe() {
            Ok(Some(output)) => output,
            Ok(None) => return Err(format!("{} vanished", binary.display())),
            Err(err) => return Err(format!("{} does not run: {err:#}", binary.display())),
        };
        match parse_version(&output) {
            Some((major, minor, patch)) if (major, minor) == BPF_LINKER_SERIES => {
                Ok(format!("{major}.{minor}.{patch}"))
            }
            Some((major, minor, patch)) => Err(format!(
                "{} is {major}.{minor}.{patch}, need {}.{}.x",
                binary.display(),
                BPF_LINKER_SERIES.0,
                BPF_LINKER_SERIES.1
            )),
            None => Err(format!(
                "cannot read a version from `{} --version`: {}",
                binary.display(),
                output.trim()
            )),
        }
    }

    /// (d) Runtime and test tools from Debian.
    fn debian_tools(&mut self) -> Result<()> {
        let missing: Vec<&DebianTool> = DEBIAN_TOOLS
            .iter()
            .filter(|tool| cmd::which(tool.binary, &self.path).is_none())
            .collect();
        if !missing.is_empty() {
            let packages: Vec<&str> = missing.iter().map(|tool| tool.package).collect();
            let what = format!(
                "tools for the lab and the tests ({})",
                missing
                    .iter()
                    .map(|tool| format!("`{}`", tool.binary))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let lines: Vec<String> = missing
                .iter()
                .map(|tool| {
                    format!(
                        "setup: installing {} (no `{}` found): {}",
                        tool.package, tool.binary, tool.why
                    )
                })
                .collect();
            self.apt_install(&packages, &what, &lines)?;
            if let Some(tool) = missing
                .iter()
                .find(|tool| cmd::which(tool.binary, &self.path).is_none())
            {
                bail!(
                    "`{}` is still not found after installing {}",
                    tool.binary,
                    tool.package
                );
            }
        }
        self.present
            .extend(DEBIAN_TOOLS.iter().map(|tool| tool.package.to_owned()));
        Ok(())
    }

    /// Installs Debian packages, running `apt-get update` first (once per
    /// setup). `what` names what is missing, for errors; `lines` say what is
    /// installed and why, printed once installing is possible. Fails with
    /// what to install by hand when not root or not on a Debian-like system.
    fn apt_install(&mut self, packages: &[&str], what: &str, lines: &[String]) -> Result<()> {
        let list = packages.join(" ");
        if !Path::new(APT_GET).exists() {
            bail!(
                "missing {what}.\nThere is no {APT_GET} to install them: install these \
                 (Debian package names) by hand, then run `cargo xtask setup` again: {list}"
            );
        }
        if !is_root()? {
            bail!(
                "missing {what}.\nInstalling them needs root: run as root \
                 `apt-get update && apt-get install -y {list}`, then `cargo xtask setup` again"
            );
        }
        for line in lines {
            eprintln!("{line}");
        }
        if !self.apt_updated {
            Cmd::new(APT_GET)
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .run()
                .context("apt-get update")?;
            self.apt_updated = true;
        }
        Cmd::new(APT_GET)
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()
            .with_context(|| format!("installing {list}"))?;
        self.installed += 1;
        Ok(())
    }
}

/// Finds `channel` in the output of `rustup toolchain list` and returns the
/// host triple its full name ends with (`nightly-2026-08-01` is listed as
/// `nightly-2026-08-01-x86_64-unknown-linux-gnu (active)`), or `""` when a
/// line names it exactly (a custom toolchain). [`looks_like_triple`] keeps
/// `nightly` from matching `nightly-2026-08-01-...`.
fn find_toolchain<'a>(list: &'a str, channel: &str) -> Option<&'a str> {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .find_map(|name| match name.strip_prefix(channel)?.strip_prefix('-') {
            Some(triple) if looks_like_triple(triple) => Some(triple),
            Some(_) => None,
            None => name.eq(channel).then_some(""),
        })
}

/// Whether the output of `rustup component list --installed` lists `want`,
/// either as is (`rust-src`) or for the toolchain's host `triple`
/// (`clippy-x86_64-unknown-linux-gnu`). With no known triple, any suffix
/// that [`looks_like_triple`] counts.
fn has_component(list: &str, want: &str, triple: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| match name.strip_prefix(want) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('-').is_some_and(|suffix| {
                if triple.is_empty() {
                    looks_like_triple(suffix)
                } else {
                    suffix == triple
                }
            }),
            None => false,
        })
}

/// Whether `text` can be a target triple: it starts with a letter (the
/// architecture, unlike the year of a dated channel) and has at least three
/// dash-separated parts (`aarch64-apple-darwin`, `x86_64-unknown-linux-gnu`).
fn looks_like_triple(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic()) && text.split('-').count() >= 3
}

/// Finds the first `major.minor.patch` word in `text`, allowing a leading
/// `v` and a `-pre`/`+build` suffix: `bpf-linker 0.13.0` gives `(0, 13, 0)`.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    text.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v').unwrap_or(word);
        let core = word.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((major, minor, patch))
    })
}

/// Whether this process runs as root (effective uid 0), read from
/// `/proc/self/status`.
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = parse_euid(&status).context("no Uid line in /proc/self/status")?;
    Ok(euid == 0)
}

/// The effective uid from the text of `/proc/<pid>/status`: the second field
/// of `Uid:\treal\teffective\tsaved\tfs`.
fn parse_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_names() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    nightly-2026-08-01-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n\
                    my-custom\n";
        let triple = Some("x86_64-unknown-linux-gnu");
        assert_eq!(find_toolchain(list, "nightly-2026-08-01"), triple);
        assert_eq!(find_toolchain(list, "nightly"), triple);
        assert_eq!(find_toolchain(list, "stable"), triple);
        assert_eq!(find_toolchain(list, "1.95.0"), triple);
        assert_eq!(find_toolchain(list, "my-custom"), Some(""));
        assert_eq!(find_toolchain(list, "my"), None);
        assert_eq!(find_toolchain(list, "nightly-2026-08"), None);
        assert_eq!(find_toolchain(list, "nightly-2000-01-01"), None);
        assert_eq!(find_toolchain(list, "1.95"), None);
        assert_eq!(find_toolchain("", "stable"), None);

        let only_dated = "nightly-2026-08-01-aarch64-unknown-linux-gnu\n";
        assert_eq!(find_toolchain(only_dated, "nightly"), None);
    }

    #[test]
    fn component_names() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                    rust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        for triple in ["x86_64-unknown-linux-gnu", ""] {
            let has = |want| has_component(list, want, triple);
            assert!(has("rust-src"));
            assert!(has("clippy"));
            assert!(!has("rustfmt"));
        }
        assert!(!has_component(list, "rust", "x86_64-unknown-linux-gnu"));
        assert!(!has_component(list, "clippy", "aarch64-unknown-linux-gnu"));
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("bpf-linker 0.13.0\n"), Some((0, 13, 0)));
        assert_eq!(parse_version("bpf-linker v0.13.2-rc.1"), Some((0, 13, 2)));
        assert_eq!(
            parse_version("tool 1.2.3+abc (2026-01-01)"),
            Some((1, 2, 3))
        );
        assert_eq!(parse_version("bpf-linker 0.13"), None);
        assert_eq!(parse_version("bpf-linker"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn euid() {
        let status =
            "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }
}
