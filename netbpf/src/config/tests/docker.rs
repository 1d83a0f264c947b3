//! Tests of `[docker]`.

use super::support::*;
use crate::config::docker::*;

#[test]
fn docker_is_off_without_the_table_and_on_with_it() {
    assert_eq!(ok("").docker, DockerConfig::default());
    assert!(!ok("").docker.enabled);
    let c = ok("[docker]\n");
    assert!(c.docker.enabled);
    assert_eq!(c.docker.socket, std::path::Path::new(DEFAULT_DOCKER_SOCKET));
    let c = ok("[docker]\nenabled = false\nsocket = \"unix:///run/d/docker.sock\"\n");
    assert!(!c.docker.enabled);
    assert_eq!(c.docker.socket, std::path::Path::new("/run/d/docker.sock"));
}

#[test]
fn docker_socket_rejects_bad_values() {
    for (value, why) in [
        ("", "is empty"),
        ("docker.sock", "not an absolute path"),
        ("tcp://127.0.0.1:2375", "only a unix socket"),
    ] {
        let e = err(&format!("[docker]\nsocket = \"{value}\"\n"));
        assert!(e.starts_with("docker.socket: "), "{value}: {e}");
        assert!(e.contains(why), "{value}: {e}");
    }
    let e = err("[docker]\nsock = \"/x\"\n");
    assert!(e.contains("sock"), "unknown key named: {e}");
}
