//! The daemon's SIGHUP: re-read the config file and apply what can change
//! without a restart (the NAT rules and the `[[container]]` list). Owns
//! only the reload and its log lines; the loop that calls it is in
//! [`super`].

use std::path::Path;

use log::{error, info};

use crate::{config::Config, datapath::Datapath};

/// Re-reads `path` and applies its rules and containers to `datapath`;
/// other sections need a restart. A file that does not load changes
/// nothing. Every outcome is logged, none ends the daemon. Returns the
/// config when it loaded.
pub fn reload(datapath: &mut Datapath, path: &Path) -> Option<Config> {
    info!("SIGHUP: reloading {}", path.display());
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(
                "SIGHUP: config not applied, nothing changed: {:#}",
                anyhow::Error::from(e)
            );
            return None;
        }
    };
    config.log_warnings();
    if let Err(e) = datapath.reload_rules(&config) {
        error!(
            "SIGHUP: NAT rules not fully applied: {:#}",
            anyhow::Error::from(e)
        );
    } else {
        info!(
            "SIGHUP: {} masquerade rule(s), {} published port rule(s) applied; flows untouched",
            config.masquerade.len(),
            config.publish.len()
        );
    }
    match datapath.reload_containers(&config) {
        Ok((added, removed)) => info!("SIGHUP: {added} container(s) added, {removed} removed"),
        Err(e) => error!(
            "SIGHUP: containers not applied: {:#}",
            anyhow::Error::from(e)
        ),
    }
    Some(config)
}
