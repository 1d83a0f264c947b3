//! Whether a real dockerd can run here; the harness itself is the lab's
//! ([`netbpf::lab::Dockerd`], also behind `netbpf lab --docker`).

/// Whether dockerd, a busybox and nsenter are here; says why not when
/// they are missing, and fails instead of skipping under CI.
pub fn prerequisites() -> bool {
    let missing = netbpf::lab::dockerd_missing();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (cargo xtask setup installs docker.io and busybox-static)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}, and CI must not skip the Docker tests");
    }
    eprintln!("SKIPPED: {why}");
    false
}
