//! Tests of `[datapath]`.

use super::support::*;
use crate::config::{DatapathConfig, XdpModeChoice};
use netbpf_common::settings_flags::{NO_XDP, PASS_UNSOLICITED_SYN, VIA_STACK};

#[test]
fn fast_path_is_the_default() {
    assert!(ok("").datapath.fast_path);
    assert_eq!(ok("[datapath]\n").datapath, DatapathConfig::default());
    assert_eq!(ok("").settings().flags & VIA_STACK, 0);
}

#[test]
fn fast_path_off_sets_via_stack_beside_the_inbound_flags() {
    let c = ok("[datapath]\nfast_path = false\n[inbound]\nunsolicited_syn = \"pass\"\n");
    assert!(!c.datapath.fast_path);
    assert_eq!(c.settings().flags, VIA_STACK | PASS_UNSOLICITED_SYN);
    assert_eq!(
        c.settings().source_interval_ns,
        c.inbound.settings().source_interval_ns
    );
}

#[test]
fn datapath_refuses_unknown_keys_and_non_booleans() {
    let e = err("[datapath]\nfast_path = \"yes\"\n");
    assert!(e.contains("fast_path") || e.contains("bool"), "{e}");
    let e = err("[datapath]\nfastpath = true\n");
    assert!(e.contains("fastpath"), "unknown key named: {e}");
}

#[test]
fn xdp_is_on_by_default_and_off_sets_no_xdp() {
    let c = ok("");
    assert!(c.datapath.xdp && c.datapath.xdp_fast_path());
    assert_eq!(c.settings().flags & NO_XDP, 0);
    let c = ok("[datapath]\nxdp = false\n");
    assert!(!c.datapath.xdp_fast_path());
    assert_eq!(c.settings().flags, NO_XDP);
    // Without the fast path there is no XDP path either: VIA_STACK says it.
    let c = ok("[datapath]\nfast_path = false\n");
    assert!(!c.datapath.xdp_fast_path());
    assert_eq!(c.settings().flags, VIA_STACK);
    let e = err("[datapath]\nxdp = 1\n");
    assert!(e.contains("xdp") || e.contains("bool"), "{e}");
}

#[test]
fn xdp_mode_is_auto_by_default_and_names_one_of_three() {
    assert_eq!(ok("").datapath.xdp_mode, XdpModeChoice::Auto);
    for (name, want) in [
        ("auto", XdpModeChoice::Auto),
        ("native", XdpModeChoice::Native),
        ("generic", XdpModeChoice::Generic),
    ] {
        let c = ok(&format!("[datapath]\nxdp_mode = \"{name}\"\n"));
        assert_eq!(c.datapath.xdp_mode, want);
        assert_eq!(want.name(), name);
        // The mode alone sets no flag: the daemon adds XDP_HANDOFF or
        // NO_XDP once it knows the uplink.
        assert_eq!(c.settings().flags, 0);
    }
    let e = err("[datapath]\nxdp_mode = \"driver\"\n");
    assert!(e.contains("driver") || e.contains("variant"), "{e}");
}
