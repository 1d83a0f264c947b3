//! Published ports reached from the host itself (Docker's nat OUTPUT
//! chain): an XDP/tc datapath never sees a local connection to
//! `127.0.0.1:8080` or to the host's own address, so the cgroup socket
//! hooks translate at the socket instead — once per `connect()` (and per
//! unconnected `sendmsg()` for UDP), not per packet.
//!
//! * `connect4` / `sendmsg4`: a TCP or UDP destination that is a published
//!   port the host can reach is replaced by the container's address and
//!   port, and the original is remembered per socket.
//! * `getpeername4` / `recvmsg4`: the application sees the address it asked
//!   for, not the container's.
//!
//! Only sockets in the daemon's network namespace are touched (the hooks
//! sit on a cgroup, which spans namespaces).

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netbpf_common::{Counter, SockRevKey, SockRevValue, proto};

use crate::{
    maps::{SOCK_NETNS, SOCK_REVNAT},
    rules::published_for_host,
    stats,
};

/// Whether the socket lives in the namespace netbpf serves.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(cookie) = SOCK_NETNS.get(0) else {
        return false;
    };
    // SAFETY: a sock_addr context is valid for bpf_get_netns_cookie.
    *cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == *cookie
}

/// The transport protocol of the socket, if TCP or UDP.
#[inline(always)]
fn transport(sa: &bpf_sock_addr) -> Option<u8> {
    match sa.protocol {
        6 => Some(proto::TCP),
        17 => Some(proto::UDP),
        _ => None,
    }
}

/// connect4 / sendmsg4: redirect a published destination to its container.
#[inline(always)]
pub(crate) fn redirect(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    // SAFETY: the kernel hands the program a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some(p) = transport(sa) else { return };
    let addr = sa.user_ip4.to_ne_bytes();
    let port = u16::from_be(sa.user_port as u16);
    let Some(rule) = published_for_host(p, addr, port) else {
        return;
    };
    let to_port = rule.container_port(port);
    // SAFETY: a sock_addr context is valid for bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        addr: rule.to_addr,
        port: to_port,
        _pad: 0,
    };
    let value = SockRevValue {
        addr,
        port,
        _pad: 0,
    };
    // LRU: a full table evicts the oldest socket's entry, never fails.
    let _ = SOCK_REVNAT.insert(&key, &value, 0);
    sa.user_ip4 = u32::from_ne_bytes(rule.to_addr);
    sa.user_port = u32::from(to_port.to_be());
    stats::inc(Counter::HostSocketRedirects);
}

/// getpeername4 / recvmsg4: show the application the address it used.
#[inline(always)]
pub(crate) fn restore(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    // SAFETY: the kernel hands the program a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: a sock_addr context is valid for bpf_get_socket_cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        addr: sa.user_ip4.to_ne_bytes(),
        port: u16::from_be(sa.user_port as u16),
        _pad: 0,
    };
    if let Some(orig) = SOCK_REVNAT.get_ptr(&key) {
        // SAFETY: map value pointer, valid for this run.
        let orig = unsafe { *orig };
        sa.user_ip4 = u32::from_ne_bytes(orig.addr);
        sa.user_port = u32::from(orig.port.to_be());
    }
}
