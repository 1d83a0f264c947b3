//! Where each rule the datapath holds came from: the rows of `netbpf nat
//! list` joined with the owner registry ([`crate::owners`]). A rule no
//! owner names was added by hand (`live`).

use std::{net::Ipv4Addr, path::Path};

use crate::{
    maps::MapsError,
    owners::{self, LIVE_ORIGIN, OwnersError},
    rows::{MasqRow, NatRules, PublishRow},
};

/// What `netbpf nat list` shows: the rules pinned in `pin_dir`, each with
/// its origin (owner files that cannot be read leave origins `live`, with
/// a warning).
pub fn nat_rules(pin_dir: &Path) -> Result<NatRules, MapsError> {
    let mut rules = NatRules::read(pin_dir)?;
    if let Err(e) = label(pin_dir, &mut rules.masquerade, &mut rules.publish) {
        log::warn!("rule origins unknown: {e}");
    }
    Ok(rules)
}

/// Sets the `origin` of every row from the owner files of `pin_dir`.
pub fn label(
    pin_dir: &Path,
    masquerade: &mut [MasqRow],
    publish: &mut [PublishRow],
) -> Result<(), OwnersError> {
    let entries = owners::read_all(pin_dir)?;
    let mut masq = Vec::new();
    let mut published = Vec::new();
    for (_, e) in &entries {
        if let Some(Ok(m)) = e.rule.as_masquerade() {
            masq.push((m.source.to_string(), e.origin.as_str()));
        } else if let Some(Ok(p)) = e.rule.as_publish() {
            let key = (
                p.proto.to_string(),
                p.address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                p.port.start,
                p.port.end,
            );
            published.push((key, e.origin.as_str()));
        }
    }
    for row in masquerade {
        row.origin = masq
            .iter()
            .find(|(source, _)| *source == row.source)
            .map_or(LIVE_ORIGIN, |(_, origin)| origin)
            .to_owned();
    }
    for row in publish {
        let key = (
            row.proto.clone(),
            row.host_addr,
            row.host_port_min,
            row.host_port_max,
        );
        row.origin = published
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(LIVE_ORIGIN, |(_, origin)| origin)
            .to_owned();
    }
    Ok(())
}
