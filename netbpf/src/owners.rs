//! Who put each NAT rule into the datapath: a small registry of rule
//! owners, one state file per owner beside the daemon's lock
//! (`/run/netbpf/<pin dir>.owners/<owner>.json`, tmpfs: gone at reboot
//! with the pins themselves).
//!
//! The datapath's maps stay the one truth about what is translated; an
//! owner's file only says which of those rules it added, and why (an
//! origin such as `docker:web`). The daemon registers owner `config` for
//! the config file's rules; the Docker follower registers `docker`; the
//! CNI plugin one owner per attachment (`cni-...`, origin
//! `cni:<container id>/<ifname>`). `netbpf nat list` joins the files
//! with the maps: a rule no file names was added by hand (`live`, through
//! `netbpf publish add`). The daemon keeps the rules of owners other than
//! `config` when it fills the maps from the config (restart, SIGHUP).
//!
//! Rules are stored as the text a config entry takes and read back
//! through the config's own parsers ([`crate::config::publish_entry`],
//! [`crate::config::masquerade_entry`]), so there is one definition of a
//! valid rule.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Masquerade, Publish, masquerade_entry, publish_entry};

/// The owner name of the config file's rules.
pub const CONFIG_OWNER: &str = "config";

/// The origin shown for a rule no owner names.
pub const LIVE_ORIGIN: &str = "live";

/// Failures reading or writing owner files.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// An owner name that cannot be a file name.
    #[error("owner name {0:?}: use lower-case letters, digits and '-'")]
    BadName(String),
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A file is not an owner file.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

/// One rule an owner added, as a config entry would write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OwnedRule {
    /// A `[[masquerade]]` source CIDR.
    Masquerade {
        /// e.g. `172.17.0.0/16`.
        source: String,
    },
    /// A `[[publish]]` entry.
    Publish {
        /// `tcp` or `udp`.
        proto: String,
        /// Host port or range, e.g. `8000-8010`.
        port: String,
        /// Container `address:port`.
        to: String,
        /// Host address, if bound to one.
        address: Option<Ipv4Addr>,
    },
    /// A container-side interface the hairpin programs are attached to.
    Interface {
        /// e.g. `docker0`.
        name: String,
    },
    /// A routed container (`netbpf containers add`): its own address,
    /// behind the host side of its veth.
    Container {
        /// The container's address.
        address: Ipv4Addr,
        /// The host side of its veth.
        interface: String,
    },
}

impl OwnedRule {
    /// The rule in words, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            OwnedRule::Publish {
                proto,
                port,
                to,
                address,
            } => {
                let host = address.map_or_else(|| "*".to_owned(), |a| a.to_string());
                format!("published {proto} {host}:{port} → {to}")
            }
            OwnedRule::Masquerade { source } => format!("masquerade of {source}"),
            OwnedRule::Interface { name } => format!("hairpinning on interface {name}"),
            OwnedRule::Container { address, interface } => {
                format!("routed container {address} behind {interface}")
            }
        }
    }
}

impl OwnedRule {
    /// The rule of a validated [`Publish`].
    pub fn publish(p: &Publish) -> Self {
        OwnedRule::Publish {
            proto: p.proto.to_string(),
            port: p.port.to_string(),
            to: format!("{}:{}", p.to_addr, p.to_port),
            address: p.address,
        }
    }

    /// The rule of a validated [`Masquerade`].
    pub fn masquerade(m: &Masquerade) -> Self {
        OwnedRule::Masquerade {
            source: m.source.to_string(),
        }
    }

    /// Read back through the config's parser, if a publish rule.
    pub fn as_publish(&self) -> Option<Result<Publish, ConfigError>> {
        match self {
            OwnedRule::Publish {
                proto,
                port,
                to,
                address,
            } => Some(publish_entry(proto, port, to, *address)),
            _ => None,
        }
    }

    /// Read back through the config's parser, if a masquerade rule.
    pub fn as_masquerade(&self) -> Option<Result<Masquerade, ConfigError>> {
        match self {
            OwnedRule::Masquerade { source } => Some(masquerade_entry(source, None)),
            _ => None,
        }
    }
}

/// A rule and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedEntry {
    /// Shown by `netbpf nat list`, e.g. `docker:web`.
    pub origin: String,
    /// The rule.
    #[serde(flatten)]
    pub rule: OwnedRule,
}

#[derive(Debug, Serialize, Deserialize)]
struct OwnerFile {
    owner: String,
    rules: Vec<OwnedEntry>,
}

/// The directory of owner files for the datapath pinned in `pin_dir`.
pub fn dir_for(pin_dir: &Path) -> PathBuf {
    crate::pins::run_file(pin_dir, ".owners")
}

fn file_for(pin_dir: &Path, owner: &str) -> Result<PathBuf, OwnersError> {
    let ok = !owner.is_empty()
        && owner
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(OwnersError::BadName(owner.to_owned()));
    }
    Ok(dir_for(pin_dir).join(format!("{owner}.json")))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OwnersError + '_ {
    move |source| OwnersError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Replaces what `owner` says it added (written to a temporary file and
/// renamed, so a reader never sees half of it).
pub fn write(pin_dir: &Path, owner: &str, rules: &[OwnedEntry]) -> Result<(), OwnersError> {
    let path = file_for(pin_dir, owner)?;
    let dir = dir_for(pin_dir);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let file = OwnerFile {
        owner: owner.to_owned(),
        rules: rules.to_vec(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| OwnersError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// What `owner` says it added (nothing if it has no file).
pub fn read(pin_dir: &Path, owner: &str) -> Result<Vec<OwnedEntry>, OwnersError> {
    let path = file_for(pin_dir, owner)?;
    read_file(&path)
}

fn read_file(path: &Path) -> Result<Vec<OwnedEntry>, OwnersError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let file: OwnerFile = serde_json::from_str(&text).map_err(|e| OwnersError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(file.rules)
}

/// Every owner's entries, owners by name: `(owner, entry)`.
pub fn read_all(pin_dir: &Path) -> Result<Vec<(String, OwnedEntry)>, OwnersError> {
    let dir = dir_for(pin_dir);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut owners: Vec<(String, PathBuf)> = listing
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_owned(), p.clone())))
        .collect();
    owners.sort();
    let mut out = Vec::new();
    for (owner, path) in owners {
        out.extend(read_file(&path)?.into_iter().map(|e| (owner.clone(), e)));
    }
    Ok(out)
}

/// Forgets one owner (nothing to do if it has no file).
pub fn remove(pin_dir: &Path, owner: &str) -> Result<(), OwnersError> {
    let path = file_for(pin_dir, owner)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The owners that have a file (also those that hold no rule), by name.
pub fn names(pin_dir: &Path) -> Result<Vec<String>, OwnersError> {
    let dir = dir_for(pin_dir);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut names: Vec<String> = listing
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Forgets every owner (`netbpf down`: the rules went with the maps).
pub fn remove_all(pin_dir: &Path) -> Result<(), OwnersError> {
    let dir = dir_for(pin_dir);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&dir)(e)),
    }
}

/// The config file's rules as owner `config` records them.
pub fn config_entries(config: &crate::config::Config) -> Vec<OwnedEntry> {
    let masq = config.masquerade.iter().map(|m| OwnedEntry {
        origin: CONFIG_OWNER.to_owned(),
        rule: OwnedRule::masquerade(m),
    });
    let publish = config.publish.iter().map(|p| OwnedEntry {
        origin: CONFIG_OWNER.to_owned(),
        rule: OwnedRule::publish(p),
    });
    masq.chain(publish).collect()
}

/// What the owners other than `config` hold, which filling the maps from
/// the config keeps: masquerade sources, published entries and
/// container-side interfaces. Entries that no longer parse are skipped
/// (their owner's next sync rewrites its file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// Masquerade rules.
    pub masquerade: Vec<Masquerade>,
    /// Published entries.
    pub publish: Vec<Publish>,
    /// Interfaces to hairpin on.
    pub interfaces: Vec<String>,
}

impl Kept {
    /// Reads the owner files of `pin_dir`; none (or unreadable) keeps nothing.
    pub fn read(pin_dir: &Path) -> Result<Self, OwnersError> {
        let mut kept = Kept::default();
        for (owner, entry) in read_all(pin_dir)? {
            if owner == CONFIG_OWNER {
                continue;
            }
            if let Some(Ok(m)) = entry.rule.as_masquerade() {
                kept.masquerade.push(m);
            } else if let Some(Ok(p)) = entry.rule.as_publish() {
                kept.publish.push(p);
            } else if let OwnedRule::Interface { name } = entry.rule {
                kept.interfaces.push(name);
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_the_config_parsers() {
        let p = publish_entry("udp", "8000-8010", "172.18.0.2:8000", None).expect("valid");
        let rule = OwnedRule::publish(&p);
        assert_eq!(rule.as_publish().expect("publish").expect("valid"), p);
        let m = masquerade_entry("172.17.0.0/16", None).expect("valid");
        let rule = OwnedRule::masquerade(&m);
        assert_eq!(rule.as_masquerade().expect("masq").expect("valid"), m);
        let entry = OwnedEntry {
            origin: "docker:web".into(),
            rule: OwnedRule::publish(&p),
        };
        let json = serde_json::to_string(&entry).expect("json");
        assert!(json.contains("\"kind\":\"publish\""), "{json}");
        assert_eq!(
            serde_json::from_str::<OwnedEntry>(&json).expect("back"),
            entry
        );
    }

    #[test]
    fn files_are_per_owner_and_owner_names_are_checked() {
        let pin_dir = PathBuf::from(format!("/tmp/netbpf-owners-test-{}", std::process::id()));
        let entry = OwnedEntry {
            origin: "docker:db".into(),
            rule: OwnedRule::Interface {
                name: "br-1234".into(),
            },
        };
        write(&pin_dir, "docker", std::slice::from_ref(&entry)).expect("write");
        write(&pin_dir, CONFIG_OWNER, &[]).expect("write config");
        assert_eq!(read(&pin_dir, "docker").expect("read"), vec![entry.clone()]);
        assert_eq!(
            read_all(&pin_dir).expect("all"),
            vec![("docker".to_owned(), entry)]
        );
        let kept = Kept::read(&pin_dir).expect("kept");
        assert_eq!(kept.interfaces, vec!["br-1234".to_owned()]);
        assert!(matches!(
            write(&pin_dir, "../x", &[]),
            Err(OwnersError::BadName(_))
        ));
        assert_eq!(
            names(&pin_dir).expect("names"),
            vec![CONFIG_OWNER.to_owned(), "docker".to_owned()]
        );
        remove(&pin_dir, "docker").expect("remove one");
        remove(&pin_dir, "docker").expect("removing a missing owner is fine");
        assert_eq!(
            names(&pin_dir).expect("names"),
            vec![CONFIG_OWNER.to_owned()]
        );
        remove_all(&pin_dir).expect("remove");
        assert!(read_all(&pin_dir).expect("empty").is_empty());
    }
}
