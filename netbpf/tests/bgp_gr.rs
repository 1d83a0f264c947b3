//! Graceful restart end to end with real BIRD daemons: two container
//! hosts, clients of a route reflector (BIRD in a router namespace), with
//! `[bgp] graceful_restart_time = 8`. A TCP stream from a container on
//! host 1 to one on host 2 keeps flowing (a numbered line every 10 ms,
//! echoed in order, never reset) while netbpf on host 2 is stopped, across
//! its restart on a config without host 2's second container (withdrawn
//! everywhere, the first kept), and while BIRD on host 2 is killed and
//! restarted; host 1 keeps its route all along. Once host 2 stops for
//! good, its route goes after the restart time.
//!
//! Namespaces are `nbrr<x>-<pid>-*`, removed on drop, also when a test
//! fails. Needs root and `bird` (Debian `bird2`).

#[macro_use]
mod common;
mod bgp_common;

use bgp_common::*;

use common::{exe, require_root};

use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use netbpf::{
    bgp::GracefulRestart,
    multihost::{MultiHost, Topology, container_addr, host_addr},
};

/// The restart time host 2 announces: how long the reflector keeps its
/// routes while its BIRD is away.
const RESTART_TIME: u64 = 8;

/// Generous deadlines: convergence speed is the benchmark's business.
const CONVERGE: Duration = Duration::from_secs(60);

fn reflector_log(lab: &MultiHost) -> String {
    lab.reflector
        .as_ref()
        .and_then(|r| r.bird.as_ref())
        .map(|b| std::fs::read_to_string(&b.log).unwrap_or_default())
        .unwrap_or_default()
}

/// The reflector's view of host 2's session.
fn reflector_sees_host2(lab: &MultiHost) -> Option<netbpf::bgp::PeerStatus> {
    let socket = &lab.reflector.as_ref()?.bird.as_ref()?.socket;
    let h2 = host_addr(2).to_string();
    netbpf::bgp::status(socket)
        .ok()?
        .peers
        .into_iter()
        .find(|p| p.neighbor.as_deref() == Some(h2.as_str()))
}

#[test]
fn restarting_netbpf_and_bird_keeps_routes_and_a_flowing_stream_and_a_stopped_host_is_withdrawn() {
    if !require_root(
        "restarting_netbpf_and_bird_keeps_routes_and_a_flowing_stream_and_a_stopped_host_is_withdrawn",
    ) || !bird_installed()
    {
        return;
    }
    let prefix = format!("nbrrgr-{}", std::process::id());
    let mut lab = MultiHost::build_with(&prefix, 2, 2, Topology::Reflector).expect("build");
    for h in &mut lab.hosts {
        h.bgp_extra = format!("graceful_restart_time = {RESTART_TIME}\n");
    }
    lab.start(exe()).expect("start");
    lab.wait_converged(CONVERGE).expect("converged");
    let a = container_addr(1, 1);
    let b = container_addr(2, 1);
    let b2 = container_addr(2, 2);
    let s = reflector_sees_host2(&lab).expect("reflector session to host 2");
    assert_eq!(s.graceful_restart, GracefulRestart::Able, "{s:#?}");
    assert_eq!(s.restart_time, Some(RESTART_TIME as u32), "{s:#?}");

    let echo_addr = SocketAddrV4::new(b, 7007);
    let server = echo_server(&lab.hosts[1].containers[0].ns, echo_addr);
    let stream = lab.hosts[0].containers[0]
        .ns
        .run(move || TcpStream::connect_timeout(&SocketAddr::V4(echo_addr), Duration::from_secs(5)))
        .expect("netns")
        .expect("connect");
    assert_eq!(stream.local_addr().expect("local").ip(), a);
    let flow = Flow::start(stream);
    flow.advances(50, CONVERGE, "before any restart");

    // netbpf on host 2 stops. Its routing stays: the programs in their
    // pinned links, the maps, the host routes; BIRD, not netbpf's child,
    // keeps its session and keeps announcing.
    let session = reflector_sees_host2(&lab).expect("session").since;
    lab.stop_daemon(1);
    flow.advances(100, CONVERGE, "while netbpf on host 2 was stopped");
    assert!(
        has_route(&lab.hosts[0], b),
        "host 1 routes {b} while netbpf is down"
    );
    let routes = lab.hosts[1]
        .ns
        .ip(&["-4", "route", "show", &format!("{b}/32")])
        .expect("ip route");
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("dev veth-c1"),
        "host 2 keeps its host route to {b}: {}",
        String::from_utf8_lossy(&routes.stdout)
    );

    // It starts again on a config without its second container: the new
    // daemon adopts the first without a gap and removes only the second
    // (map entries, pinned link), which BIRD withdraws everywhere.
    let gone = lab.hosts[1].containers.remove(1);
    assert_eq!(gone.addr, b2);
    lab.start_daemon(1, exe())
        .expect("restart netbpf on host 2");
    flow.advances(100, CONVERGE, "across netbpf's restart on host 2");
    lab.wait_converged(CONVERGE)
        .expect("host 2's second container withdrawn, the rest kept");
    assert!(has_route(&lab.hosts[0], b), "never withdrawn on host 1");
    let s = reflector_sees_host2(&lab).expect("session");
    assert!(
        s.bgp_state == "Established" && s.since == session,
        "host 2's BGP session was not touched by netbpf's restart: {s:#?} (up since {session})"
    );
    let listed = String::from_utf8_lossy(
        &ok(run(exe(), &lab.hosts[1], &["containers", "list", "--json"])).stdout,
    )
    .into_owned();
    assert!(
        listed.contains(&format!("\"{b}\"")) && !listed.contains(&format!("\"{b2}\"")),
        "host 2 routes {b} and not {b2}: {listed}"
    );
    let links = lab.hosts[1].pin_dir.join("links");
    assert!(
        links.join("netbpf_container@veth-c1").exists()
            && !links.join("netbpf_container@veth-c2").exists(),
        "host 2's pinned links: {:?}\n{}",
        std::fs::read_dir(&links).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
        lab.hosts[1].daemon_log()
    );
    drop(gone);

    // BIRD on host 2 dies (SIGKILL, no goodbye): the reflector keeps its
    // routes as stale and shows the neighbour restarting; host 1 keeps
    // the route, host 2's kernel keeps its own (persist).
    lab.hosts[1].bird.as_mut().expect("bird").kill();
    assert!(
        eventually(CONVERGE, || reflector_sees_host2(&lab)
            .is_some_and(|p| p.graceful_restart == GracefulRestart::Restarting)),
        "the reflector never saw host 2 restart: {:#?}",
        reflector_sees_host2(&lab)
    );
    assert!(has_route(&lab.hosts[0], b), "host 1 still routes {b}");
    assert!(has_route(&lab.hosts[1], a), "host 2 still routes {a}");
    flow.advances(100, CONVERGE, "while BIRD on host 2 was down");
    lab.hosts[1].start_bird(true).expect("restart bird");
    // Back once the graceful restart is over: host 2 re-announced its
    // route and sent End-of-RIB, so the reflector no longer holds it as
    // stale.
    assert!(
        eventually(CONVERGE, || reflector_sees_host2(&lab).is_some_and(|p| {
            p.bgp_state == "Established"
                && p.imported == Some(1)
                && p.graceful_restart == GracefulRestart::Able
        })),
        "host 2 never came back: {:#?}",
        reflector_sees_host2(&lab)
    );
    lab.wait_converged(CONVERGE)
        .expect("every route in every kernel");
    assert!(has_route(&lab.hosts[0], b), "never withdrawn on host 1");
    flow.advances(100, CONVERGE, "across BIRD's restart on host 2");
    let received = flow.received();
    flow.stop();
    eprintln!("{received} lines echoed in order across both restarts");
    let _ = server.join();

    // Host 2 stops for good: its route stays while the reflector waits the
    // restart time it announced, then goes.
    lab.stop_daemon(1);
    lab.hosts[1].bird.as_mut().expect("bird").kill();
    let stopped = Instant::now();
    assert!(
        has_route(&lab.hosts[0], b),
        "kept while host 2 may come back; the reflector: {:#?}\n{}",
        reflector_sees_host2(&lab),
        reflector_log(&lab)
    );
    assert!(
        eventually(CONVERGE + Duration::from_secs(RESTART_TIME), || !has_route(
            &lab.hosts[0],
            b
        )),
        "host 1 still routes {b} long after host 2's restart time"
    );
    let took = stopped.elapsed();
    eprintln!("host 2's route withdrawn {took:?} after it stopped (restart time {RESTART_TIME} s)");
    assert!(
        took >= Duration::from_secs(RESTART_TIME / 2),
        "withdrawn after {took:?}: the restart time ({RESTART_TIME} s) was not honoured"
    );
}
