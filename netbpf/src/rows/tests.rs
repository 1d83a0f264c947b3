//! Tests of the rows `netbpf nat list` prints.

use super::*;
use netbpf_common::{MasqRule, PublishRule, proto};

/// The blocks `datapath::fill_publish` writes for one rule.
fn entries(
    p: u8,
    addr: [u8; 4],
    min: u16,
    max: u16,
    to: [u8; 4],
    to_port: u16,
) -> Vec<PublishEntry> {
    let rule = PublishRule::new(to, to_port, min, max);
    netbpf_common::publish_blocks(p, addr, min, max)
        .map(|(prefix_len, key)| PublishEntry {
            prefix_len,
            key,
            rule,
        })
        .collect()
}

#[test]
fn blocks_merge_back_into_one_row_per_rule() {
    let c1 = [10, 77, 0, 2];
    let c2 = [10, 77, 0, 3];
    let mut all = Vec::new();
    // Stored in an order unlike the sorted one, as a trie walk may.
    all.extend(entries(proto::UDP, [0; 4], 8081, 8081, c1, 4000));
    all.extend(entries(proto::TCP, [0; 4], 9000, 9002, c2, 4000));
    all.extend(entries(proto::TCP, [127, 0, 0, 1], 8090, 8090, c1, 4000));
    all.extend(entries(proto::TCP, [0; 4], 8081, 8081, c1, 4000));
    all.extend(entries(
        proto::TCP,
        [203, 0, 113, 1],
        20000,
        30000,
        c2,
        20000,
    ));
    all.reverse();
    let rows = publish_rows(&all);
    let text: Vec<Vec<String>> = rows.iter().map(PublishRow::cells).collect();
    assert_eq!(
        text,
        vec![
            vec!["tcp", "*:8081", "10.77.0.2:4000", "live"],
            vec!["tcp", "*:9000-9002", "10.77.0.3:4000-4002", "live"],
            vec!["tcp", "127.0.0.1:8090", "10.77.0.2:4000", "live"],
            vec![
                "tcp",
                "203.0.113.1:20000-30000",
                "10.77.0.3:20000-30000",
                "live"
            ],
            vec!["udp", "*:8081", "10.77.0.2:4000", "live"],
        ]
    );
    assert!(rows.iter().all(|r| r.complete));
    assert_eq!(
        rows[3].trie_entries,
        netbpf_common::publish_blocks(proto::TCP, [0; 4], 20000, 30000).count()
    );
    assert!(rows[3].trie_entries > 1);
    assert_eq!(rows[1].trie_entries, 2, "9000-9001 and 9002");
}

#[test]
fn a_partial_range_is_shown_as_held_and_flagged() {
    let mut e = entries(proto::TCP, [0; 4], 9000, 9002, [10, 77, 0, 3], 4000);
    // Drop the block for 9000-9001: only 9002 remains.
    e.retain(|b| b.ports() == (9002, 9002));
    let rows = publish_rows(&e);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].host_port_min, rows[0].host_port_max), (9002, 9002));
    assert_eq!((rows[0].to_port_min, rows[0].to_port_max), (4002, 4002));
    assert!(!rows[0].complete);
}

#[test]
fn masquerade_rows_sort_and_name_the_port_mode() {
    let rule = |port_min, port_max| MasqRule {
        to_addr: [203, 0, 113, 1],
        port_min,
        port_max,
    };
    let rows = masquerade_rows(&[
        MasqEntry {
            prefix_len: 24,
            source: [10, 78, 0, 0],
            rule: rule(61000, 65535),
        },
        MasqEntry {
            prefix_len: 16,
            source: [10, 77, 0, 0],
            rule: rule(0, 0),
        },
    ]);
    let text: Vec<Vec<String>> = rows.iter().map(MasqRow::cells).collect();
    assert_eq!(
        text,
        vec![
            vec!["10.77.0.0/16", "203.0.113.1", "class-preserving", "live"],
            vec!["10.78.0.0/24", "203.0.113.1", "61000-65535", "live"],
        ]
    );
    assert_eq!(rows[0].port_min, None);
    assert_eq!(rows[1].port_mode, "range");
}
