//! Whether the kernel signs TCP segments with MD5 (RFC 2385,
//! `CONFIG_TCP_MD5SIG`), which a BGP `password` needs: asked by setting a
//! key on a socket that is never connected.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// Linux's `struct tcp_md5sig` (`include/uapi/linux/tcp.h`).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; 80],
}

/// Whether `setsockopt(TCP_MD5SIG)` works on a fresh TCP socket in the
/// calling thread's network namespace. A kernel without TCP MD5 answers
/// `ENOPROTOOPT`; any failure counts as "no".
pub fn tcp_md5_supported() -> bool {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr_storage; both are plain data.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&raw const sin).cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    sig.keylen = 4;
    sig.key[..4].copy_from_slice(b"test");
    // SAFETY: a valid socket, a pointer to a live struct and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    rc == 0
}
