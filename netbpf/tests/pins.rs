//! The daemon lock (one daemon per pin directory). It needs root for
//! `/run/netbpf`, and so the same guard as the other root tests: skipped
//! when not root, a failure under CI.

mod common;

use std::{fs, path::PathBuf};

use common::require_root;
use netbpf::pins::{DaemonLock, PinsError};

#[test]
fn a_second_daemon_is_refused_and_the_lock_frees_on_drop() {
    if !require_root("a_second_daemon_is_refused_and_the_lock_frees_on_drop") {
        return;
    }
    let dir = PathBuf::from(format!("/sys/fs/bpf/nbt-lock-{}", std::process::id()));
    let first = DaemonLock::acquire(&dir).expect("first");
    assert!(matches!(
        DaemonLock::acquire(&dir),
        Err(PinsError::Locked { .. })
    ));
    let path = first.path().to_owned();
    drop(first);
    let again = DaemonLock::acquire(&dir).expect("free again");
    drop(again);
    let _ = fs::remove_file(path);
}
