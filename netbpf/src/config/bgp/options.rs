//! What a BGP session may carry besides its address and AS: `multihop`,
//! an MD5 `password` and the `next_hop` policy, their types and
//! validation. Every session table (`[[bgp.peer]]`, `[[bgp.reflector]]`,
//! `[[bgp.client]]`) takes them; they matter most for eBGP to a
//! top-of-rack router.

use serde::{Deserialize, Serialize};

use crate::config::errors::*;

/// Largest `multihop`: the session's TTL is one byte.
pub const MAX_BGP_MULTIHOP: u8 = 255;

/// Longest MD5 `password` in bytes: Linux's `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_BGP_PASSWORD_LEN: usize = 80;

/// What the session sends as next hop for the routes this host passes on
/// (`next_hop`; BIRD's `next hop self` / `next hop keep`). Unset, BIRD
/// decides: its own address on eBGP, the original next hop on iBGP. A
/// host's own containers are always announced with its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NextHop {
    /// Always this host's address (`next hop self`): the router behind
    /// the session sends the traffic through this host.
    #[serde(rename = "self")]
    SelfAddress,
    /// The next hop the route came with (`next hop keep`), also on eBGP:
    /// traffic goes straight to the originating host.
    Keep,
}

impl NextHop {
    /// The word in the config (`next_hop = "self"`).
    pub fn as_str(self) -> &'static str {
        match self {
            NextHop::SelfAddress => "self",
            NextHop::Keep => "keep",
        }
    }

    /// The BIRD channel option.
    pub fn bird(self) -> &'static str {
        match self {
            NextHop::SelfAddress => "next hop self",
            NextHop::Keep => "next hop keep",
        }
    }
}

/// The MD5 password of a session (RFC 2385, BIRD's `password`). Its
/// `Debug` form hides it, so a logged config does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct BgpPassword(String);

impl BgpPassword {
    /// The password itself, to render BIRD's config.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BgpPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BgpPassword(<hidden>)")
    }
}

/// The options of one session; all off by default (a direct session
/// without a password, BIRD's next-hop default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// `multihop`: the neighbour is this many hops away at most (the
    /// session's TTL), not on the uplink's segment. `None`: `direct`.
    pub multihop: Option<u8>,
    /// `password`: TCP MD5 signatures on the session (both ends must
    /// have the same one; the kernel needs `CONFIG_TCP_MD5SIG`).
    pub password: Option<BgpPassword>,
    /// `next_hop`: `self` or `keep`; `None`: BIRD's default.
    pub next_hop: Option<NextHop>,
}

/// `multihop`: 1..=255 hops.
pub(super) fn multihop(key: &str, n: i64) -> Result<u8, ConfigError> {
    match u8::try_from(n) {
        Ok(h) if h >= 1 => Ok(h),
        _ => Err(invalid(
            key,
            format!(
                "{n} is not a hop count in 1..={MAX_BGP_MULTIHOP} (leave multihop out for a \
                 neighbour on the uplink's segment)"
            ),
        )),
    }
}

/// `password`: 1..=80 printable bytes that BIRD's quoted string holds
/// as they are (no `"`, no `\`).
pub(super) fn password(key: &str, s: String) -> Result<BgpPassword, ConfigError> {
    if s.is_empty() {
        return Err(invalid(
            key,
            "is empty; leave password out for a session without MD5",
        ));
    }
    if s.len() > MAX_BGP_PASSWORD_LEN {
        return Err(invalid(
            key,
            format!(
                "is {} bytes; TCP MD5 keys are at most {MAX_BGP_PASSWORD_LEN}",
                s.len()
            ),
        ));
    }
    // Said without quoting the value: it is a secret.
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(invalid(
            key,
            "holds a quote, a backslash or a control character, which BIRD's config \
             string cannot carry as is",
        ));
    }
    Ok(BgpPassword(s))
}
