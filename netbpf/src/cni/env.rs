//! The `CNI_*` environment variables of one invocation, checked: which
//! command, and for the commands about one attachment the container ID,
//! its network namespace and interface name. Anything missing or
//! malformed is error code 4.

use clap::ValueEnum;

use super::spec::CniError;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CniCommand {
    /// Add the container's rules.
    #[value(name = "ADD")]
    Add,
    /// Remove what ADD added.
    #[value(name = "DEL")]
    Del,
    /// Check that what ADD added is still there.
    #[value(name = "CHECK")]
    Check,
    /// The versions this plugin speaks.
    #[value(name = "VERSION")]
    Version,
    /// Whether the plugin can serve ADD.
    #[value(name = "STATUS")]
    Status,
    /// Drop the entries of attachments the runtime no longer lists.
    #[value(name = "GC")]
    Gc,
}

/// One invocation's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub command: CniCommand,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (ADD, CHECK; may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME` (ADD, DEL, CHECK).
    pub ifname: String,
}

impl Invocation {
    /// Reads the invocation from `var` (the process environment, or a
    /// map in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let raw = var("CNI_COMMAND")
            .ok_or_else(|| CniError::InvalidEnv("CNI_COMMAND is not set".to_owned()))?;
        let command = CniCommand::from_str(&raw, false).map_err(|_| {
            CniError::InvalidEnv(format!(
                "CNI_COMMAND={raw:?}: expected ADD, DEL, CHECK, VERSION, STATUS or GC"
            ))
        })?;
        let mut inv = Invocation {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
        };
        if matches!(
            command,
            CniCommand::Version | CniCommand::Status | CniCommand::Gc
        ) {
            return Ok(inv);
        }
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| CniError::InvalidEnv(format!("{name} is not set")))
        };
        inv.container_id = required("CNI_CONTAINERID")?;
        check_container_id(&inv.container_id)?;
        inv.ifname = required("CNI_IFNAME")?;
        check_ifname(&inv.ifname)?;
        inv.netns = if command == CniCommand::Del {
            var("CNI_NETNS").unwrap_or_default()
        } else {
            required("CNI_NETNS")?
        };
        Ok(inv)
    }
}

/// The spec: letters, digits, `_`, `.`, `-`, starting with a letter or
/// digit.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::InvalidEnv(format!(
            "CNI_CONTAINERID={id:?}: only letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, `:` or white space, not
/// `.` or `..`.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::InvalidEnv(format!(
            "CNI_IFNAME={name:?} is not an interface name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Invocation, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Invocation::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn each_command_needs_its_variables() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        let inv = env(&add).expect("ADD");
        assert_eq!(
            (inv.command, inv.ifname.as_str()),
            (CniCommand::Add, "eth0")
        );
        assert_eq!(env(&add[..3]).expect_err("no ifname").code(), 4);
        let del = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(env(&del).expect("DEL without netns").netns, "");
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).expect("VERSION").command,
            CniCommand::Version
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "GC")]).expect("GC").command,
            CniCommand::Gc
        );
        assert_eq!(env(&[]).expect_err("no command").code(), 4);
        assert_eq!(env(&[("CNI_COMMAND", "add")]).expect_err("case").code(), 4);
        let mut bad = add;
        bad[1].1 = "../etc";
        assert_eq!(env(&bad).expect_err("bad id").code(), 4);
        let mut bad = add;
        bad[3].1 = "a/b";
        assert_eq!(env(&bad).expect_err("bad ifname").code(), 4);
    }
}
