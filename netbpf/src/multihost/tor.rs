//! A top-of-rack router of the racks lab: a namespace with one leg on its
//! rack's segment, one on the spine and a loopback address, running BIRD
//! alone with its own AS. Its BIRD config is what a real ToR needs to peer
//! with netbpf hosts (docs/multi-host.md shows it): eBGP to each host
//! (with the host's password, multihop from the loopback where the host
//! asks for it), eBGP to the other routers, container routes only in,
//! BGP routes out, and BGP routes into the kernel so it forwards.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use super::{bird::BirdDaemon, racks::*};
use crate::{
    bgp,
    lab::{LabError, io_err},
    netns::{self, Netns},
};

/// Name of the router's import filter: container routes only.
const TOR_LEARN: &str = "tor_learn";

/// Name of the router's export filter: what BGP brought, nothing else.
const TOR_PASS: &str = "tor_pass";

/// BIRD's config for rack `r`'s router in `plan`.
pub fn render_tor(plan: &Racks, r: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "# Written by netbpf's lab: the top-of-rack router of rack {r}, AS {asn}.\n\n\
         log stderr all;\n\
         router id {rid};\n\n\
         protocol device {{\n  scan time 10;\n}}\n\n\
         # Connected subnets: they resolve the next hops of multihop sessions.\n\
         protocol direct {{\n  ipv4;\n}}\n\n\
         # Forward along what BGP learned.\n\
         protocol kernel {{\n  ipv4 {{\n    import none;\n    export where source = RTS_BGP;\n  }};\n}}\n\n\
         # From a host, only its containers (/32s or blocks in the container range).\n\
         filter {TOR_LEARN} {{\n  if net ~ [ {range}{{24,32}} ] then accept;\n  reject;\n}}\n\n\
         filter {TOR_PASS} {{\n  if source = RTS_BGP then accept;\n  reject;\n}}\n",
        asn = tor_as(r),
        rid = tor_loopback(r),
        range = CONTAINER_RANGE,
    );
    for h in plan.hosts_of(r) {
        let t = plan.session(h);
        let mut opts = String::new();
        match t.multihop {
            // The host peers with the loopback: answer from it.
            Some(n) => {
                let _ = write!(opts, "  multihop {n};\n  source address {};\n", t.tor_addr);
            }
            None => opts.push_str("  direct;\n"),
        }
        if let Some(pw) = t.password {
            let _ = writeln!(opts, "  password \"{pw}\";");
        }
        let _ = write!(
            s,
            "\n# Host {h}.\n\
             protocol bgp host_{h} {{\n\
             \x20 local as {las};\n\
             \x20 neighbor {addr} as {asn};\n\
             {opts}\
             \x20 connect retry time 5;\n\
             \x20 ipv4 {{\n    import filter {TOR_LEARN};\n    export filter {TOR_PASS};\n  }};\n\
             }}\n",
            las = t.tor_as,
            addr = t.host_addr,
            asn = t.host_as,
        );
    }
    for o in (1..=plan.racks).filter(|&o| o != r) {
        let mut opts = String::new();
        if let Some(pw) = plan.spine_password() {
            let _ = writeln!(opts, "  password \"{pw}\";");
        }
        let _ = write!(
            s,
            "\n# Rack {o}'s router, over the spine.\n\
             protocol bgp tor_{o} {{\n\
             \x20 local as {las};\n\
             \x20 neighbor {addr} as {asn};\n\
             \x20 direct;\n\
             {opts}\
             \x20 connect retry time 5;\n\
             \x20 ipv4 {{\n    import all;\n    export filter {TOR_PASS};\n  }};\n\
             }}\n",
            las = tor_as(r),
            addr = tor_spine_addr(o),
            asn = tor_as(o),
        );
    }
    s
}

/// Rack `r`'s router. Dropping it stops BIRD, then removes the namespace.
pub struct RackRouter {
    /// Its BIRD, once started (dropped before the namespace).
    pub bird: Option<BirdDaemon>,
    /// Its namespace, `{prefix}-tor{r}`.
    pub ns: Netns,
    /// The rack (1-based).
    pub rack: usize,
    /// Its files: bird.conf, the socket and the log.
    pub dir: PathBuf,
}

impl RackRouter {
    /// Creates the namespace: `eth0` at [`tor_addr`] on the rack's bridge
    /// `br{r}`, `spine` at [`tor_spine_addr`] on the spine bridge `br0`,
    /// [`tor_loopback`] on `lo`, forwarding on.
    pub fn build(prefix: &str, segment: &Netns, r: usize, dir: &Path) -> Result<Self, LabError> {
        let ns = Netns::create(&format!("{prefix}-tor{r}"))?;
        let rack_port = format!("p-tor{r}");
        netns::veth(segment, &rack_port, &ns, "eth0")?;
        segment.ip(&["link", "set", &rack_port, "master", &format!("br{r}")])?;
        let spine_port = format!("s-tor{r}");
        netns::veth(segment, &spine_port, &ns, "spine")?;
        segment.ip(&["link", "set", &spine_port, "master", "br0"])?;
        ns.ip(&["addr", "add", &format!("{}/24", tor_addr(r)), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", tor_spine_addr(r)),
            "dev",
            "spine",
        ])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/32", tor_loopback(r)),
            "dev",
            "lo",
        ])?;
        ns.sysctl("net.ipv4.ip_forward=1")?;
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(RackRouter {
            bird: None,
            ns,
            rack: r,
            dir: dir.to_path_buf(),
        })
    }

    /// The router's BIRD config file.
    pub fn bird_conf(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    /// Writes the router's BIRD config for `plan` and starts BIRD.
    pub fn start(&mut self, plan: &Racks) -> Result<(), LabError> {
        let conf = self.bird_conf();
        bgp::write_atomic_mode(&conf, &render_tor(plan, self.rack), bgp::SECRET_FILE_MODE)
            .map_err(|e| LabError::Daemon(format!("router {} config: {e}", self.rack)))?;
        if let Some(mut b) = self.bird.take() {
            b.kill();
        }
        self.bird = Some(BirdDaemon::start(&self.ns, &conf, &self.dir, false)?);
        Ok(())
    }

    /// The router's BGP routes in its kernel (what it forwards along).
    pub fn kernel_bgp_routes(&self) -> Result<Vec<Ipv4Addr>, LabError> {
        let out = self.ns.ip(&["-4", "route", "show", "proto", "bird"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| p.split('/').next().and_then(|a| a.parse().ok()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `protocol bgp NAME` block of `conf`.
    fn block<'a>(conf: &'a str, name: &str) -> &'a str {
        let start = conf
            .find(&format!("protocol bgp {name} {{"))
            .unwrap_or_else(|| panic!("no {name} in {conf}"));
        let end = conf[start..].find("\n}\n").unwrap() + start;
        &conf[start..end]
    }

    #[test]
    fn each_router_mirrors_its_hosts_sessions_and_peers_over_the_spine() {
        let plan = Racks {
            hosts: 4,
            racks: 2,
            md5: true,
        };
        let r1 = render_tor(&plan, 1);
        let b = block(&r1, "host_1");
        assert!(
            b.contains("  local as 65001;\n  neighbor 10.0.1.11 as 65101;\n  direct;\n"),
            "{b}"
        );
        assert!(
            b.contains(&format!("  password \"{RACK1_PASSWORD}\";\n")),
            "{b}"
        );
        assert!(
            b.contains("import filter tor_learn;") && b.contains("export filter tor_pass;"),
            "{b}"
        );
        let b = block(&r1, "tor_2");
        assert!(
            b.contains("  neighbor 10.0.255.2 as 65002;\n  direct;\n"),
            "{b}"
        );
        assert!(
            b.contains(&format!("  password \"{SPINE_PASSWORD}\";\n")),
            "{b}"
        );
        assert!(
            !r1.contains("host_3"),
            "rack 2's hosts are not rack 1's: {r1}"
        );
        let r2 = render_tor(&plan, 2);
        let b = block(&r2, "host_3");
        assert!(!b.contains("password"), "{b}");
        // Host 4 peers with the loopback: the router answers from it.
        let b = block(&r2, "host_4");
        assert!(
            b.contains("  multihop 2;\n  source address 10.255.0.2;\n"),
            "{b}"
        );
        assert!(r2.contains("router id 10.255.0.2;"), "{r2}");
        let plain = render_tor(&Racks { md5: false, ..plan }, 1);
        assert!(!plain.contains("password"), "{plain}");
        assert_eq!(r1.matches('{').count(), r1.matches('}').count());
    }
}
