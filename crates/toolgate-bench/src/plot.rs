//! The latency plot: percentile curves (direct vs through the gateway), one panel per offered
//! rate, written as a self-contained SVG by hand — no plotting library, no fonts to find.

use hdrhistogram::Histogram;

/// One curve: a label, a colour, the latencies (ns).
pub struct Series<'a> {
    pub label: String,
    pub color: &'static str,
    pub latency: &'a Histogram<u64>,
}

pub struct Panel<'a> {
    pub title: String,
    pub series: Vec<Series<'a>>,
}

const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 340.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 26.0;
const TOP: f64 = 74.0;
const BOTTOM: f64 = 52.0;
/// Highest percentile drawn: 99.99 (x = 4 on the "number of nines" axis).
const NINES: f64 = 4.0;
/// Points per curve, minus one.
const STEPS: usize = 80;

/// The percentile curve as drawn: (nines, latency in µs) from p0 to p99.99 in 81 steps, where
/// 2 nines is p99 and 3 is p99.9.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=STEPS)
        .map(|k| {
            let n = NINES * k as f64 / STEPS as f64;
            (n, at_nines(h, n))
        })
        .collect()
}

/// Latency in µs at `nines` nines (0 → p0, 2 → p99, 3 → p99.9).
fn at_nines(h: &Histogram<u64>, nines: f64) -> f64 {
    let q = 1.0 - 10f64.powf(-nines);
    h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1e3
}

pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 30.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{}</text>
"#,
        width / 2.0,
        escape(title)
    );
    for (i, p) in panels.iter().enumerate() {
        out.push_str(&panel(p, PANEL_W * i as f64, 24.0));
    }
    out.push_str("</svg>\n");
    out
}

fn panel(p: &Panel, x0: f64, y0: f64) -> String {
    let (pw, ph) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    let curves: Vec<Vec<(f64, f64)>> = p
        .series
        .iter()
        .map(|s| {
            curve(s.latency)
                .into_iter()
                .map(|(n, v)| (n, v.max(1.0)))
                .collect()
        })
        .collect();
    let (lo, hi) = curves
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, v)| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo > hi { (1.0, 10.0) } else { (lo, hi) };
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let sx = |n: f64| x0 + LEFT + n / NINES * pw;
    let sy = |v: f64| y0 + TOP + ph - (v.log10() - dlo) / (dhi - dlo) * ph;
    let mut out = format!(
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" font-weight="bold">{}</text>
<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
"##,
        x0 + LEFT + pw / 2.0,
        y0 + 16.0,
        escape(&p.title),
        x0 + LEFT,
        y0 + TOP
    );
    // y grid: 1-2-5 per decade, labelled.
    let mut decade = dlo;
    while decade < dhi + 0.01 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(decade);
            if v.log10() > dhi + 1e-9 {
                continue;
            }
            let y = sy(v);
            out.push_str(&format!(
                r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>
"##,
                x0 + LEFT,
                x0 + LEFT + pw,
                x0 + LEFT - 4.0,
                y + 4.0,
                micros_label(v)
            ));
        }
        decade += 1.0;
    }
    for (n, label) in [
        (0.0, "p0"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
        (4.0, "p99.99"),
    ] {
        let x = sx(n);
        out.push_str(&format!(
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>
"##,
            y0 + TOP,
            y0 + TOP + ph,
            y0 + TOP + ph + 14.0
        ));
    }
    out.push_str(&format!(
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>
<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">latency (log scale)</text>
"#,
        x0 + LEFT + pw / 2.0,
        y0 + TOP + ph + 30.0,
        x0 + 12.0,
        y0 + TOP + ph / 2.0,
        x0 + 12.0,
        y0 + TOP + ph / 2.0
    ));
    for (i, (s, c)) in p.series.iter().zip(&curves).enumerate() {
        let points: Vec<String> = c
            .iter()
            .map(|&(n, v)| format!("{:.1},{:.1}", sx(n), sy(v)))
            .collect();
        out.push_str(&format!(
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>
"#,
            s.color,
            points.join(" ")
        ));
        let ly = y0 + 28.0 + 13.0 * i as f64;
        out.push_str(&format!(
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>
"#,
            x0 + LEFT,
            x0 + LEFT + 18.0,
            s.color,
            x0 + LEFT + 22.0,
            ly + 4.0,
            escape(&s.label)
        ));
    }
    out
}

fn micros_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
