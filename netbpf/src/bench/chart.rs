//! The SVG bar chart both plots draw.

use std::fmt::Write as _;

/// Width of the plot.
pub(crate) const CHART_WIDTH: f64 = 760.0;

/// One bar of a chart: label, value, colour, and a note after the value.
pub(crate) type Bar = (String, f64, &'static str, String);

/// A log-scale horizontal bar chart (SVG elements, no `<svg>`) and its
/// height; `fmt` labels the values.
pub(crate) fn chart(title: &str, bars: &[Bar], fmt: fn(f64) -> String) -> (String, f64) {
    let (w, bar_h, left, top) = (CHART_WIDTH, 26.0, 190.0, 40.0);
    let h = top + bar_h * bars.len() as f64 + 40.0;
    let finite: Vec<f64> = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let hi = finite.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lmin, lmax) = (lo.log10().floor(), hi.log10().ceil());
    let span = w - left - 90.0;
    let x = |v: f64| left + (v.log10() - lmin) / (lmax - lmin).max(1.0) * span;
    let mut svg = format!("<text x=\"{left}\" y=\"20\" font-size=\"14\">{title}</text>\n");
    let mut e = lmin;
    while e <= lmax {
        let v = 10f64.powf(e);
        let xv = x(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{xv:.1}\" y1=\"{top}\" x2=\"{xv:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{xv:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            h - 30.0,
            h - 14.0,
            fmt(v)
        );
        e += 1.0;
    }
    for (i, (label, v, colour, note)) in bars.iter().enumerate() {
        let y = top + bar_h * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left - 8.0,
            y + bar_h * 0.65
        );
        if v.is_finite() && *v > 0.0 {
            let xv = x(*v);
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}{note}</text>",
                y + 3.0,
                (xv - left).max(1.0),
                bar_h - 6.0,
                xv + 4.0,
                y + bar_h * 0.65,
                fmt(*v)
            );
        }
    }
    (svg, h)
}
