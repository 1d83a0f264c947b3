//! What to run: the bench's options and its parts.

use std::path::PathBuf;

use anyhow::Result;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The reduced matrix (under two minutes).
    pub quick: bool,
    /// Where the result folder is created.
    pub out_dir: PathBuf,
    /// The `netbpf` binary (the router bench starts it as the daemon).
    pub netbpf_exe: PathBuf,
    /// The command line that started the bench, recorded in the results.
    pub command: String,
    /// Skip the router bench (part 2).
    pub skip_router: bool,
    /// Run only this part.
    pub only: Option<Part>,
    /// The router bench's variants to run, by name (empty: all of them).
    pub variants: Vec<String>,
}

/// A part of the bench, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// 1: in-kernel cost per path.
    Kernel,
    /// 2: router cost against iptables-nft.
    Router,
    /// 3: install time.
    Install,
    /// 4: the SYN flood each datapath absorbs.
    Flood,
    /// 5: BGP convergence on changes.
    Bgp,
}

impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(Part::Kernel),
            "router" => Ok(Part::Router),
            "install" => Ok(Part::Install),
            "flood" => Ok(Part::Flood),
            "bgp" => Ok(Part::Bgp),
            _ => Err(format!(
                "unknown part {s:?}: one of kernel, router, install, flood, bgp"
            )),
        }
    }
}

impl Part {
    /// The name `--only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::Router => "router",
            Part::Install => "install",
            Part::Flood => "flood",
            Part::Bgp => "bgp",
        }
    }
}
