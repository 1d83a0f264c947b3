//! How the summaries write figures.

/// A time in ns, in ns or µs as its size asks; `–` for none.
pub(crate) fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "–".to_owned()
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A ratio to three decimals; `–` for none.
pub(crate) fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.3}")
    } else {
        "–".to_owned()
    }
}
