//! netbpf as a CNI plugin (`netbpf cni`, or the binary run as
//! `netbpf-cni`): a chained plugin, after `bridge` or `ptp`, that puts a
//! container's published ports (the `portMappings` capability) and, if
//! the network asks, masquerade of its address into the running
//! datapath, in place of the reference `portmap` plugin.
//!
//! [`invoke`] is one invocation: the `CNI_*` environment ([`env`]) and the
//! network configuration on stdin ([`spec`]) in, what goes to stdout and
//! whether it succeeded out. The datapath side is [`attach`].

pub mod attach;
pub mod env;
mod rules;
pub mod spec;

use std::{net::Ipv4Addr, path::PathBuf};

use serde_json::Value;

use self::{
    attach::{Attachment, Wanted},
    env::{CniCommand, Invocation},
    spec::{CniError, LATEST_VERSION, Mode, NetConf, PrevResult, SUPPORTED_VERSIONS, VersionInfo},
};
use crate::config::{masquerade_entry, publish_entry};

/// What one invocation prints on stdout, and whether it succeeded (the
/// process exits non-zero when not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A result, the version answer, an error object, or nothing.
    pub stdout: String,
    /// Whether the command succeeded.
    pub success: bool,
}

/// Runs one invocation: `var` reads the environment, `stdin` is what the
/// runtime wrote.
pub fn invoke(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    match run(&var, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => {
            // The error is written in the caller's version when it gave
            // a supported one.
            let version = serde_json::from_slice::<Value>(stdin)
                .ok()
                .and_then(|v| spec::check_version(&v).ok())
                .unwrap_or_else(|| LATEST_VERSION.to_owned());
            Outcome {
                stdout: e.to_json(&version),
                success: false,
            }
        }
    }
}

fn run(var: &impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    let inv = Invocation::from_env(var)?;
    if inv.command == CniCommand::Version {
        return Ok(version(stdin));
    }
    let conf = spec::decode(stdin)?;
    let pin_dir = conf
        .pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_PIN_DIR));
    let attachment = Attachment {
        pin_dir: pin_dir.clone(),
        network: conf.name.clone(),
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
    };
    match inv.command {
        CniCommand::Add => {
            let (value, prev, ip) = previous(&conf, &inv)?;
            attachment.add(&wanted(&conf, &prev, ip)?)?;
            let mut result = value;
            if let Value::Object(map) = &mut result {
                map.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
            }
            Ok(result.to_string())
        }
        CniCommand::Del => attachment.del().map(|()| String::new()),
        CniCommand::Check => {
            let (_, prev, ip) = previous(&conf, &inv)?;
            attachment
                .check(&wanted(&conf, &prev, ip)?)
                .map(|()| String::new())
        }
        CniCommand::Status => attach::status(&pin_dir).map(|()| String::new()),
        CniCommand::Gc => {
            let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
                CniError::InvalidConfig(
                    "GC without cni.dev/valid-attachments (would drop every attachment)".to_owned(),
                )
            })?;
            let valid: Vec<(String, String)> = valid
                .iter()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            let removed = attach::gc(&pin_dir, &conf.name, &valid)?;
            if removed > 0 {
                log::info!(
                    "GC of network {}: removed {removed} attachment(s)",
                    conf.name
                );
            }
            Ok(String::new())
        }
        CniCommand::Version => Ok(version(stdin)),
    }
}

/// `VERSION`: the version asked for if spoken, else the latest.
fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| spec::check_version(&v).ok())
        .unwrap_or_else(|| LATEST_VERSION.to_owned());
    let info = VersionInfo {
        cni_version: asked,
        supported_versions: SUPPORTED_VERSIONS.to_vec(),
    };
    serde_json::to_string(&info).unwrap_or_default()
}

/// The previous result (as given and as read) and the container's IPv4
/// address in it.
fn previous(conf: &NetConf, inv: &Invocation) -> Result<(Value, PrevResult, Ipv4Addr), CniError> {
    let value = conf.prev_result.clone().ok_or_else(|| {
        CniError::InvalidConfig(
            "no prevResult: netbpf is a chained plugin, put it after `bridge` or `ptp` in a conflist"
                .to_owned(),
        )
    })?;
    let prev: PrevResult = serde_json::from_value(value.clone())
        .map_err(|e| CniError::InvalidConfig(format!("prevResult: {e}")))?;
    let ip = prev.container_ipv4(&inv.ifname).ok_or_else(|| {
        CniError::InvalidConfig(format!(
            "prevResult has no IPv4 address on {} (netbpf translates IPv4 only)",
            inv.ifname
        ))
    })?;
    Ok((value, prev, ip))
}

/// The rules the configuration asks for `ip`, validated by the config
/// file's own parsers.
fn wanted(conf: &NetConf, prev: &PrevResult, ip: Ipv4Addr) -> Result<Wanted, CniError> {
    let invalid = |what: String, e: crate::config::ConfigError| {
        CniError::InvalidConfig(format!("{what}: {:#}", anyhow::Error::from(e)))
    };
    let mut publish = Vec::new();
    for (i, m) in conf.runtime_config.port_mappings.iter().enumerate() {
        let what = format!("runtimeConfig.portMappings[{i}]");
        let address = match m.host_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(a)) if a.is_unspecified() => None,
                Ok(std::net::IpAddr::V4(a)) => Some(a),
                Ok(std::net::IpAddr::V6(_)) => {
                    return Err(CniError::UnsupportedField(format!(
                        "{what}.hostIP {text}: netbpf publishes IPv4 ports only"
                    )));
                }
                Err(_) => {
                    return Err(CniError::InvalidConfig(format!(
                        "{what}.hostIP {text:?} is not an address"
                    )));
                }
            },
        };
        let p = publish_entry(
            &m.protocol.to_ascii_lowercase(),
            &m.host_port.to_string(),
            &format!("{ip}:{}", m.container_port),
            address,
        )
        .map_err(|e| invalid(what, e))?;
        publish.push(p);
    }
    let routed = match conf.mode {
        Mode::Nat => None,
        Mode::Routed if conf.masquerade => {
            return Err(CniError::InvalidConfig(
                "\"masquerade\": a routed container keeps its own address; use mode nat".to_owned(),
            ));
        }
        Mode::Routed => {
            let host = prev.host_interface().ok_or_else(|| {
                CniError::InvalidConfig(
                    "mode routed: prevResult names no host-side interface (chain netbpf after `ptp`)"
                        .to_owned(),
                )
            })?;
            Some((ip, host.to_owned()))
        }
    };
    let masquerade = if conf.masquerade {
        Some(
            masquerade_entry(&format!("{ip}/32"), None)
                .map_err(|e| invalid("masquerade".into(), e))?,
        )
    } else {
        None
    };
    Ok(Wanted {
        publish,
        routed,
        masquerade,
        masquerade_to: conf.masquerade_to,
    })
}
