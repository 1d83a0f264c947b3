//! Coexisting with iptables NAT: `netbpf daemon` reads the namespace's
//! `iptables-save -t nat` at start and warns about every rule that
//! translates the same traffic as its own config.
//!
//! The dump is read with the importer ([`crate::import`]) in its lenient
//! mode, with the config's uplink, so a rule is judged the way `netbpf
//! import iptables-save` judges it: what it does to traffic through the
//! uplink. Rules the importer cannot express are not checked (the daemon
//! logs them at debug level).
//!
//! The hooks decide who wins: outbound, netfilter's POSTROUTING runs
//! before netbpf's tc egress, so an iptables MASQUERADE/SNAT translates
//! first; inbound, netbpf's tc ingress runs before netfilter's PREROUTING,
//! so netbpf's published ports translate first.

use std::{net::Ipv4Addr, process::Command};

use log::debug;

use crate::{
    config::Config,
    import::{ImportOptions, Imported, import_iptables_save},
};

fn show_rule(origin: &[(usize, String)]) -> String {
    let parts: Vec<String> = origin
        .iter()
        .map(|(line, text)| format!("line {line}: {text}"))
        .collect();
    parts.join("; ")
}

fn show_addr(a: Option<Ipv4Addr>) -> String {
    a.map_or_else(|| "*".to_owned(), |a| a.to_string())
}

/// One warning per pair of an imported iptables NAT rule and a netbpf
/// config entry that translate the same traffic: a MASQUERADE/SNAT whose
/// source overlaps a `[[masquerade]]` source, a DNAT whose protocol and
/// host ports overlap a `[[publish]]` (on the same address, or when either
/// has none).
pub fn overlaps(imported: &Imported, config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, m) in imported.config.masquerade.iter().enumerate() {
        let rule = imported
            .masquerade_origin
            .get(i)
            .map(|o| show_rule(std::slice::from_ref(o)))
            .unwrap_or_default();
        for mine in config
            .masquerade
            .iter()
            .filter(|c| c.source.overlaps(&m.source))
        {
            out.push(format!(
                "iptables nat rule ({rule}) source-translates {} out of {}, overlapping \
                 [[masquerade]] source {}: netfilter's POSTROUTING runs before netbpf's tc \
                 egress, so iptables translates these packets first and netbpf sees them \
                 already translated (its masquerade does nothing for them); remove the rule \
                 to let netbpf translate new flows",
                m.source, config.uplink.interface, mine.source
            ));
        }
    }
    for (i, p) in imported.config.publish.iter().enumerate() {
        let rule = imported
            .publish_origin
            .get(i)
            .map(|o| show_rule(o))
            .unwrap_or_default();
        for mine in config.publish.iter().filter(|c| {
            c.proto == p.proto
                && c.port.overlaps(&p.port)
                && (c.address.is_none() || p.address.is_none() || c.address == p.address)
        }) {
            out.push(format!(
                "iptables nat rule ({rule}) forwards {} {}:{} to {}:{}, overlapping [[publish]] \
                 {} {}:{} -> {}:{}: netbpf's tc ingress runs before netfilter's PREROUTING, so \
                 netbpf translates these packets first and netfilter sees them already \
                 addressed to the container (the DNAT rule is bypassed); remove it to avoid \
                 surprises",
                p.proto,
                show_addr(p.address),
                p.port,
                p.to_addr,
                p.to_port,
                mine.proto,
                show_addr(mine.address),
                mine.port,
                mine.to_addr,
                mine.to_port,
            ));
        }
    }
    out
}

/// Reads `iptables-save -t nat` in the current network namespace and
/// returns [`overlaps`] with `config`. A missing `iptables-save`, a
/// failure, or a dump the importer cannot read gives no warnings (a debug
/// log says why).
pub fn check_iptables(config: &Config) -> Vec<String> {
    let output = match Command::new("iptables-save").args(["-t", "nat"]).output() {
        Ok(o) => o,
        Err(e) => {
            debug!("coexistence check skipped: running iptables-save: {e}");
            return Vec::new();
        }
    };
    if !output.status.success() {
        debug!(
            "coexistence check skipped: iptables-save -t nat: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return Vec::new();
    }
    let dump = String::from_utf8_lossy(&output.stdout);
    let opts = ImportOptions {
        uplink: Some(config.uplink.interface.clone()),
        skip_unsupported: true,
        timeouts: None,
    };
    match import_iptables_save(&dump, &opts) {
        Ok(imported) => {
            for s in &imported.skipped {
                debug!("coexistence check: not checked: {s}");
            }
            overlaps(&imported, config)
        }
        Err(e) => {
            debug!("coexistence check skipped: reading iptables-save -t nat: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(rules: &str) -> String {
        format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n{rules}COMMIT\n"
        )
    }

    fn check(rules: &str, toml: &str) -> Vec<String> {
        let config = Config::from_toml(toml).unwrap();
        let opts = ImportOptions {
            uplink: Some(config.uplink.interface.clone()),
            skip_unsupported: true,
            timeouts: None,
        };
        let imported = import_iptables_save(&nat(rules), &opts).unwrap();
        overlaps(&imported, &config)
    }

    const DOCKER: &str = "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
         -A DOCKER -i docker0 -j RETURN\n\
         -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n";

    /// Asserts there is one warning and it names every one of `parts`.
    #[track_caller]
    fn assert_one_warning(w: &[String], parts: &[&str]) {
        assert_eq!(w.len(), 1, "{w:?}");
        for part in parts {
            assert!(w[0].contains(part), "{}", w[0]);
        }
    }

    #[test]
    fn masquerade_overlap_warns_with_the_rule() {
        let w = check(
            DOCKER,
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"172.17.0.0/24\"\n",
        );
        assert_one_warning(
            &w,
            &[
                "line 8: -A POSTROUTING -s 172.17.0.0/16",
                "[[masquerade]] source 172.17.0.0/24",
                "POSTROUTING runs before netbpf's tc egress",
            ],
        );
    }

    #[test]
    fn publish_overlap_warns_with_both_targets() {
        let w = check(
            DOCKER,
            "[uplink]\ninterface = \"eth0\"\n[[publish]]\nproto = \"tcp\"\nport = \"8000-8090\"\n\
             to = \"10.77.0.2:8000\"\n",
        );
        assert_one_warning(
            &w,
            &[
                "line 10: -A DOCKER ! -i docker0",
                "tcp *:8080 to 172.17.0.2:80",
                "tcp *:8000-8090 -> 10.77.0.2:8000",
                "tc ingress runs before netfilter's PREROUTING",
            ],
        );
    }

    #[test]
    fn disjoint_rules_do_not_warn() {
        // Other subnet, other protocol, other port, other address.
        let w = check(
            "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE\n\
             -A PREROUTING -d 203.0.113.5/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 172.18.0.2\n\
             -A PREROUTING -p tcp -m tcp --dport 81 -j DNAT --to-destination 172.18.0.2\n\
             -A PREROUTING -p udp -m udp --dport 8080 -j DNAT --to-destination 172.18.0.2\n",
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"172.17.0.0/16\"\n\
             [[publish]]\nproto = \"tcp\"\nport = 80\nto = \"172.17.0.2:80\"\naddress = \"203.0.113.1\"\n\
             [[publish]]\nproto = \"tcp\"\nport = 8080\nto = \"172.17.0.2:80\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn address_overlap_and_snat() {
        let w = check(
            "-A POSTROUTING -s 10.0.0.0/8 -o eth0 -j SNAT --to-source 203.0.113.1\n\
             -A PREROUTING -d 203.0.113.1/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.1.0.2\n",
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.1.0.0/16\"\n\
             [[masquerade]]\nsource = \"10.2.0.0/16\"\n\
             [[publish]]\nproto = \"udp\"\nport = 53\nto = \"10.1.0.3:53\"\n",
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("overlapping [[masquerade]] source 10.1.0.0/16"));
        assert!(w[1].contains("overlapping [[masquerade]] source 10.2.0.0/16"));
        assert!(
            w[2].contains("udp 203.0.113.1:53 to 10.1.0.2:53"),
            "{}",
            w[2]
        );
    }

    #[test]
    fn rules_on_other_interfaces_are_not_netbpfs() {
        // Masquerading out of another interface: skipped by the importer,
        // and netbpf only sees the uplink anyway.
        let w = check(
            "-A POSTROUTING -s 10.77.0.0/24 -o wg0 -j MASQUERADE\n",
            "[uplink]\ninterface = \"eth0\"\n[[masquerade]]\nsource = \"10.77.0.0/24\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }
}
