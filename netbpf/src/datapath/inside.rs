//! Container-side interfaces that appear after start: a rule owner (the
//! Docker follower) has the hairpin programs attached to a new bridge, and
//! detached when its network goes. The config's own inside interfaces are
//! attached at start ([`super::Datapath::start_with`]) and never here.

use aya::programs::TcAttachType;
use log::info;

use crate::{netdev, pins};

use super::{
    Datapath, DatapathError,
    attach::{TcTarget, attach_tc_pinned},
    programs,
};

impl Datapath {
    /// Attaches the hairpin programs to a container-side interface for a
    /// rule owner (a Docker bridge that appeared); `false` if they already
    /// were. Fails if the interface does not exist.
    pub fn attach_inside(&mut self, name: &str) -> Result<bool, DatapathError> {
        if self.resolved.inside.iter().any(|(n, _)| n == name) {
            return Ok(false);
        }
        let ifindex = netdev::ifindex(name).map_err(|source| DatapathError::Interface {
            name: name.to_owned(),
            source,
        })?;
        let target = TcTarget {
            ifname: name,
            ifindex,
            attach: TcAttachType::Ingress,
        };
        attach_tc_pinned(&mut self.ebpf, programs::INSIDE, target, &self.pin_dir)?;
        attach_tc_pinned(&mut self.ebpf, programs::FAST_OUT, target, &self.pin_dir)?;
        self.resolved.inside.push((name.to_owned(), ifindex));
        self.owned_inside.push(name.to_owned());
        info!("hairpinning on {name} (ifindex {ifindex})");
        Ok(true)
    }

    /// Detaches what [`Datapath::attach_inside`] attached (the bridge's
    /// network was removed); interfaces the config leads to stay.
    pub fn detach_inside(&mut self, name: &str) -> Result<bool, DatapathError> {
        if !self.owned_inside.iter().any(|n| n == name) {
            return Ok(false);
        }
        for program in [programs::INSIDE, programs::FAST_OUT] {
            pins::remove_file(&pins::link_pin(&self.pin_dir, program, name))?;
        }
        self.owned_inside.retain(|n| n != name);
        self.resolved.inside.retain(|(n, _)| n != name);
        info!("no longer hairpinning on {name}");
        Ok(true)
    }

    /// Whether the hairpin programs are attached to `name`.
    pub fn has_inside(&self, name: &str) -> bool {
        self.resolved.inside.iter().any(|(n, _)| n == name)
    }
}
