//! The test setup: a lab (host and outside machine), a real dockerd in
//! the host, whoami servers, and netbpf following dockerd.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::{Duration, Instant},
};

use netbpf::{
    lab::{self, Dockerd, Lab, OUTSIDE_ADDR, Transport, UPLINK_ADDR, WhoamiServer, parse_whoami},
    netns::Netns,
};

use super::{
    common::{self, cli, exe},
    dockerd,
};

/// Everything one test runs; fields drop in order: containers' names,
/// dockerd (its containers and mounts), then the lab (daemon, namespaces).
pub struct Setup {
    pub servers: Vec<WhoamiServer>,
    pub containers: Vec<Netns>,
    pub docker: Dockerd,
    pub lab: Lab,
}

impl Setup {
    /// A lab host and outside machine, dockerd in the host, whoami servers
    /// on the outside machine (TCP and UDP 4000), netbpf following dockerd.
    pub fn new(name: &str) -> Setup {
        Setup::with(name, "", false)
    }

    /// [`Setup::new`] with `extra` config for netbpf; `netbpf_first`
    /// starts netbpf before dockerd exists (as systemd orders them).
    pub fn with(name: &str, extra: &str, netbpf_first: bool) -> Setup {
        let prefix = format!("nbdk{name}-{}", std::process::id());
        let mut lab = Lab::build(&prefix, 0).expect("lab");
        let dir = lab.dir.join("docker");
        let socket = dir.join("docker.sock").display().to_string();
        let out = SocketAddrV4::new(OUTSIDE_ADDR, 4000);
        let servers = vec![
            WhoamiServer::spawn(&lab.outside, Transport::Tcp, out, "outside saw").expect("tcp"),
            WhoamiServer::spawn(&lab.outside, Transport::Udp, out, "outside saw").expect("udp"),
        ];
        let args = ["--docker", socket.as_str()];
        let docker = if netbpf_first {
            lab.start_daemon_with(exe(), extra, &args).expect("daemon");
            Dockerd::start(&lab.host, &dir).expect("dockerd")
        } else {
            let docker = Dockerd::start(&lab.host, &dir).expect("dockerd");
            lab.start_daemon_with(exe(), extra, &args).expect("daemon");
            docker
        };
        let s = Setup {
            servers,
            containers: Vec::new(),
            docker,
            lab,
        };
        s.wait_for_rule("docker:network:bridge");
        s
    }

    /// `docker run` a container with `args` (`-p ...`) and whoami servers
    /// on its `ports` (TCP and UDP) answering `"NAME PORT saw"`.
    pub fn run(&mut self, name: &str, args: &[&str], ports: &[u16]) {
        let ns = format!("{}-{name}", self.lab.prefix);
        let netns = self.docker.run(name, args, &ns).expect("docker run");
        self.serve(&netns, name, ports);
        self.containers.push(netns);
    }

    pub fn serve(&mut self, ns: &Netns, name: &str, ports: &[u16]) {
        for &port in ports {
            let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
            let hello = format!("{name} {port} saw");
            for t in [Transport::Tcp, Transport::Udp] {
                self.servers
                    .push(WhoamiServer::spawn(ns, t, any, &hello).expect("container server"));
            }
        }
    }

    pub fn nat_list(&self) -> String {
        cli(&self.lab, &["nat", "list"])
    }

    /// Waits (10 s at most) until `nat list` shows a rule from `origin`.
    pub fn wait_for_rule(&self, origin: &str) {
        self.wait_until(Duration::from_secs(10), |text| text.contains(origin))
            .unwrap_or_else(|text| panic!("no rule from {origin}:\n{text}\n{}", self.logs()));
    }

    /// Polls `nat list` until `done` holds; the last listing either way.
    pub fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.nat_list();
            if done(&text) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                return Err(text);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "netbpf:\n{}\ndockerd:\n{}",
            self.lab.daemon_log(),
            self.docker.log()
        )
    }

    pub fn outside_tcp(&self, port: u16) -> Result<SocketAddrV4, String> {
        let answer = lab::tcp_whoami(&self.lab.outside, SocketAddrV4::new(UPLINK_ADDR, port))
            .map_err(|e| e.to_string())?;
        parse_whoami(&answer).ok_or(answer)
    }
}

pub fn require() -> bool {
    common::require_root("docker tests") && dockerd::prerequisites()
}
