//! Hand-written SVG line plots: x on a log2 axis, y on a log10(1 + y)
//! axis, one line per series.

use std::fmt::Write as _;

/// One line: its name and its points.
pub type Series = (String, Vec<(f64, f64)>);

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

const COLOURS: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line plot of `series` (x > 0; y >= 0).
pub fn plot(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0.max(1.0).log2()))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| (1.0 + p.1.max(0.0)).log10()))
        .collect();
    let (x0, x1) = bounds(&xs, 1.0);
    let (_, y1) = bounds(&ys, 1.0);
    let y0 = 0.0;
    let y1 = y1.ceil().max(1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Axes.
    let _ = writeln!(
        s,
        r#"<path d="M{l} {t} V{b} H{r}" stroke="black" fill="none"/>"#,
        l = LEFT,
        t = TOP,
        b = TOP + ph,
        r = LEFT + pw
    );
    // x ticks at powers of two.
    let mut x = x0.floor();
    while x <= x1 + 1e-9 {
        let gx = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{t}" x2="{gx:.1}" y2="{b}" stroke="#ddd"/><text x="{gx:.1}" y="{ty}" text-anchor="middle">{lab}</text>"##,
            t = TOP,
            b = TOP + ph,
            ty = TOP + ph + 15.0,
            lab = binary(2f64.powf(x))
        );
        x += if x1 - x0 > 12.0 { 2.0 } else { 1.0 };
    }
    // y ticks at decades.
    let mut y = 0.0;
    while y <= y1 + 1e-9 {
        let gy = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{gy:.1}" x2="{r}" y2="{gy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{lab}</text>"##,
            l = LEFT,
            r = LEFT + pw,
            tx = LEFT - 5.0,
            ty = gy + 4.0,
            lab = short(10f64.powf(y) - 1.0)
        );
        y += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 10.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="15" y="{}" text-anchor="middle" transform="rotate(-90 15 {})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(ylabel)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    px(x.max(1.0).log2()),
                    py((1.0 + y.max(0.0)).log10())
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>"#);
        }
        let ly = TOP + 14.0 * i as f64;
        let lx = LEFT + pw + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn bounds(v: &[f64], min_span: f64) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, min_span);
    }
    if hi - lo < min_span {
        (lo, lo + min_span)
    } else {
        (lo, hi)
    }
}

/// A power of two in binary units: 4096 -> "4k", 2097152 -> "2M".
pub fn binary(v: f64) -> String {
    let v = v.round() as u64;
    let (d, u) = match v {
        0x4000_0000.. => (0x4000_0000, "G"),
        0x10_0000.. => (0x10_0000, "M"),
        0x400.. => (0x400, "k"),
        _ => (1, ""),
    };
    if v.is_multiple_of(d) {
        format!("{}{u}", v / d)
    } else {
        format!("{:.1}{u}", v as f64 / d as f64)
    }
}

/// 1536 -> "1.5k", 2097152 -> "2M".
pub fn short(v: f64) -> String {
    let v = v.round();
    let (d, u) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if (x - x.round()).abs() < 0.05 {
        format!("{}{u}", x.round())
    } else {
        format!("{x:.1}{u}")
    }
}
