//! The native XDP fast path's hand-off (`xdp.rs` with `XDP_HANDOFF`, and
//! `handoff.rs` at the uplink's tc ingress): XDP translates an established
//! inbound packet, leaves a metadata record of its next hop in front of it
//! and passes it; tc reads the record first and redirects the packet, TTL
//! minus one and the hop's MACs, without a lookup.
//!
//! BPF_PROG_TEST_RUN's XDP output starts at the metadata, so the XDP
//! side is checked byte for byte with the record in front. This kernel's
//! BPF_PROG_TEST_RUN for tc takes no skb metadata, so the tc side is
//! checked on the real chain, in the test thread's namespace: `netbpf_arp`
//! attached natively to `nbf-up` and `netbpf_ingress` at its tc ingress, a
//! frame sent into `nbf-upp` (the outside's end), and what comes out of
//! `nbf-inp` (the container's end) captured and compared byte for byte.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use aya::{
    maps::{Array, MapData},
    programs::{TcAttachType, XdpMode},
};
use netbpf_common::{Settings, XDP_HANDOFF_MAGIC, XdpHandoff, settings_flags};

use super::{
    fast::{C1_MAC, IN_MAC, REMOTE_MAC, UP_MAC, ifindex, open_flow, ttl, with},
    xdp::{arp_program, xdp_dp},
    *,
};

/// Bytes of the record.
const LEN: usize = size_of::<XdpHandoff>();

/// [`xdp_dp`] (no device in `XDP_TARGETS`) with `XDP_HANDOFF` set, as
/// the daemon sets it for native mode.
fn handoff_dp(dp: Dp) -> Dp {
    let mut dp = xdp_dp(dp, true, false);
    let mut settings: Array<&mut MapData, Settings> =
        Array::try_from(dp.ebpf.map_mut(map_names::SETTINGS).expect("map")).expect("type");
    let mut s = settings.get(&0, 0).expect("settings");
    s.flags |= settings_flags::XDP_HANDOFF;
    settings.set(0, &s, 0).expect("settings");
    dp
}

/// The record's bytes, as the XDP program writes them (host order).
fn record(ifindex: u32, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut r = XDP_HANDOFF_MAGIC.to_ne_bytes().to_vec();
    r.extend(ifindex.to_ne_bytes());
    r.extend(dst);
    r.extend(src);
    assert_eq!(r.len(), LEN);
    r
}

/// A masqueraded flow C1:40000 → REMOTE:443 whose first reply tc has
/// translated (which writes the reply half XDP looks up).
fn answered_flow(dp: &Dp) {
    open_flow(dp);
    let syn_ack = frame(REMOTE, UPLINK, &tcp(443, 40000, SYN | ACK), &ttl(64));
    let (rc, out) = xdp_of(&dp.ebpf, &syn_ack);
    assert_eq!((rc, out), (XDP_PASS, syn_ack.clone()), "no reply half yet");
    assert_eq!(dp.ingress(&syn_ack).0, TC_REDIRECT, "tc translates it");
}

#[test]
fn xdp_translates_in_place_and_leaves_the_record_in_front() {
    require_root!();
    let dp = handoff_dp(Dp::new(""));
    answered_flow(&dp);
    let ack = L4::Tcp {
        sport: 443,
        dport: 40000,
        flags: ACK,
        payload: b"response".to_vec(),
    };
    let (rc, out) = xdp_of(&dp.ebpf, &frame(REMOTE, UPLINK, &ack, &ttl(64)));
    assert_eq!(rc, XDP_PASS, "passed to tc");
    // The record, then the frame translated (checksums from scratch) with
    // its TTL and MACs as they came: tc's to write.
    let mut want = record(ifindex("nbf-in"), C1_MAC, IN_MAC);
    want.extend(frame(REMOTE, C1, &ack, &ttl(64)));
    assert_bytes(&out, &want, "record + translated frame");
    assert_eq!(dp.counter(Counter::XdpHandoffIn), 1);
    assert_eq!(dp.counter(Counter::XdpFastIn), 0, "nothing redirected");
    assert_eq!(dp.counter(Counter::ReversePackets), 2, "tc's and XDP's");
    assert_eq!(dp.counter(Counter::FastPathIn), 1, "tc's only: it sends");
    // UDP, with and without a checksum.
    let port = dp.out_port(C1, &udp(5000, 53, b"query"));
    assert_eq!(
        dp.ingress(&frame(REMOTE, UPLINK, &udp(53, port, b"1"), &ttl(64)))
            .0,
        TC_REDIRECT,
        "the first answer writes the reply half"
    );
    for no_checksum in [false, true] {
        let l4 = |dport| L4::Udp {
            sport: 53,
            dport,
            payload: b"answer, odd length".to_vec(),
            no_checksum,
        };
        let (rc, out) = xdp_of(&dp.ebpf, &frame(REMOTE, UPLINK, &l4(port), &ttl(9)));
        assert_eq!(rc, XDP_PASS);
        let mut want = record(ifindex("nbf-in"), C1_MAC, IN_MAC);
        want.extend(frame(REMOTE, C1, &l4(5000), &ttl(9)));
        assert_bytes(&out, &want, "UDP record + translated frame");
    }
    assert_eq!(dp.counter(Counter::XdpHandoffIn), 3);
}

#[test]
fn what_xdp_cannot_finish_passes_without_a_record() {
    require_root!();
    let dp = handoff_dp(Dp::new(""));
    answered_flow(&dp);
    let reply = tcp(443, 40000, ACK);
    let mut partial = frame(REMOTE, UPLINK, &reply, &ttl(64));
    let seed = netbpf_common::pseudo_header_seed(REMOTE.octets(), UPLINK.octets(), TCP, 20);
    partial[50..52].copy_from_slice(&seed);
    for (pkt, what, reason) in [
        (partial, "a CHECKSUM_PARTIAL seed", Counter::XdpPassChecksum),
        (
            frame(REMOTE, UPLINK, &reply, &ttl(1)),
            "TTL 1",
            Counter::XdpPassTtl,
        ),
    ] {
        let (rc, out) = xdp_of(&dp.ebpf, &pkt);
        assert_eq!(rc, XDP_PASS, "{what}");
        assert_bytes(&out, &pkt, what);
        assert_eq!(dp.counter(reason), 1, "{what}");
    }
    assert_eq!(dp.counter(Counter::XdpHandoffIn), 0);
}

/// An `AF_PACKET` socket for IPv4 frames bound to `ifname` in the calling
/// thread's namespace, with a receive timeout.
fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket calls on a fresh descriptor and local structs.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
        assert!(fd >= 0, "AF_PACKET socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex(ifname) as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind to {ifname}");
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

/// Sends `frame` out of the socket's device.
fn send_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: a bound packet socket and a live buffer.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "frame sent");
}

/// The next IPv4 frame that arrives on the socket's device (not one it
/// sends), or `None` within a second.
fn receive_frame(fd: &OwnedFd) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let mut buf = vec![0u8; 2048];
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: a bound packet socket and live buffers.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            return None;
        }
        if from.sll_pkttype != libc::PACKET_OUTGOING {
            buf.truncate(n as usize);
            return Some(buf);
        }
    }
    None
}

/// Attaches `netbpf_arp` natively to `nbf-up` and
/// `netbpf_ingress` at its tc ingress (tcx), as the daemon attaches them
/// in native mode; the links live as long as the loaded programs (the
/// test's namespace goes with its thread).
fn attached(dp: &mut Dp) {
    arp_program(dp)
        .attach(ifindex("nbf-up"), XdpMode::Driver)
        .expect("native XDP on a veth");
    let tc: &mut SchedClassifier = dp
        .ebpf
        .program_mut(programs::INGRESS)
        .expect("program")
        .try_into()
        .expect("type");
    tc.attach(ifindex("nbf-up"), TcAttachType::Ingress)
        .expect("tcx");
}

#[test]
fn tc_sends_the_handed_off_packet_on_with_the_records_hop() {
    require_root!();
    let mut dp = handoff_dp(Dp::new(""));
    answered_flow(&dp);
    attached(&mut dp);
    let outside = packet_socket("nbf-upp");
    let container = packet_socket("nbf-inp");
    let ack = L4::Tcp {
        sport: 443,
        dport: 40000,
        flags: ACK,
        payload: b"through XDP and tc".to_vec(),
    };
    let sent = with(frame(REMOTE, UPLINK, &ack, &ttl(64)), UP_MAC, REMOTE_MAC);
    let (handoffs, fast) = (
        dp.counter(Counter::XdpHandoffIn),
        dp.counter(Counter::FastPathIn),
    );
    send_frame(&outside, &sent);
    let got = receive_frame(&container).expect("delivered to the container's end");
    // Translated by XDP, one hop older and addressed to the container
    // from the host side of its link by tc; checksums from scratch.
    let want = with(frame(REMOTE, C1, &ack, &ttl(63)), C1_MAC, IN_MAC);
    assert_bytes(&got, &want, "the frame the container gets");
    assert_eq!(dp.counter(Counter::XdpHandoffIn), handoffs + 1, "XDP's");
    assert_eq!(
        dp.counter(Counter::FastPathIn),
        fast + 1,
        "tc redirected it"
    );
    assert_eq!(dp.counter(Counter::XdpFastIn), 0);

    // A checksum left to the device takes tc whole, and arrives the same.
    let mut partial = sent.clone();
    let seed = netbpf_common::pseudo_header_seed(REMOTE.octets(), UPLINK.octets(), TCP, 38);
    partial[50..52].copy_from_slice(&seed);
    send_frame(&outside, &partial);
    let got = receive_frame(&container).expect("the fallback delivers too");
    assert_eq!(&got[..12], &want[..12], "tc's MACs");
    assert_eq!(&got[14..34], &want[14..34], "tc's IP header");
    assert_eq!(dp.counter(Counter::XdpPassChecksum), 1);
    assert_eq!(dp.counter(Counter::XdpHandoffIn), handoffs + 1);
    assert_eq!(dp.counter(Counter::FastPathIn), fast + 2);
}
