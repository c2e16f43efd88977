//! A hand-written SVG plot of a run: throughput over time on top, latency (p99 and p50) over
//! time below, with a dashed marker for every event (region killed, region restarted). No
//! plotting crate: the picture is a few polylines, and the output stays a plain text file.

use crate::stats::SecondPoint;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the end of warm-up.
    pub t: f64,
    pub label: String,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const PANEL_H: f64 = 220.0;
const TOP1: f64 = 60.0;
const TOP2: f64 = 360.0;

/// Smallest of 1, 2, 5 times a power of ten that is >= v (and > 0).
pub fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * exp >= v * (1.0 - 1e-12) {
            return m * exp;
        }
    }
    10.0 * exp
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

struct Panel {
    top: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_H - (v / self.y_max).clamp(0.0, 1.0) * PANEL_H
    }

    /// Frame, grid, tick labels and axis titles.
    fn axes(&self, out: &mut String, title: &str, y_label: &str) {
        let right = WIDTH - RIGHT;
        let bottom = self.top + PANEL_H;
        let _ = writeln!(out, r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#, self.top - 12.0, escape(title));
        for i in 0..=5 {
            let v = self.y_max * i as f64 / 5.0;
            let y = self.y(v);
            let _ = writeln!(out, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e5e5e5"/>"##);
            let _ = writeln!(out, r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, fmt_num(v));
        }
        let step = nice_ceiling(self.x_max / 10.0 * (1.0 - 1e-9));
        let mut t = 0.0;
        while t <= self.x_max + 1e-9 {
            let x = self.x(t);
            let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#333"/>"##, bottom + 5.0);
            let _ = writeln!(out, r#"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#, bottom + 18.0, fmt_num(t));
            t += step;
        }
        let _ =
            writeln!(out, r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_H}" fill="none" stroke="#333"/>"##, self.top, right - LEFT);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">seconds since warm-up ended</text>"#,
            (LEFT + right) / 2.0,
            bottom + 34.0
        );
        let cy = self.top + PANEL_H / 2.0;
        let _ = writeln!(
            out,
            r#"<text x="18" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {cy})">{}</text>"#,
            escape(y_label)
        );
    }

    fn line(&self, out: &mut String, points: &[(f64, f64)], color: &str, width: f64) {
        if points.is_empty() {
            return;
        }
        let pts: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), self.y(*v))).collect();
        let _ = writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"#, pts.join(" "));
    }

    fn events(&self, out: &mut String, events: &[Event]) {
        for (i, e) in events.iter().enumerate() {
            let x = self.x(e.t);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#d97706" stroke-width="1.5" stroke-dasharray="6,4"/>"##,
                self.top,
                self.top + PANEL_H
            );
            // Stagger labels so two close events do not print over each other.
            let y = self.top + 14.0 + 14.0 * (i % 3) as f64;
            let _ = writeln!(out, r##"<text x="{:.1}" y="{y}" font-size="11" fill="#b45309">{}</text>"##, x + 4.0, escape(&e.label));
        }
    }
}

/// The whole picture. Each point is drawn at the middle of its second.
pub fn plot(title: &str, series: &[SecondPoint], events: &[Event]) -> String {
    let last_t = series.len() as f64;
    let last_event = events.iter().map(|e| e.t).fold(0.0, f64::max);
    // The x axis ends at the first whole tick past the data, so a 31 s run is not drawn on a
    // 50 s axis.
    let x_raw = last_t.max(last_event).max(1.0);
    let x_step = nice_ceiling(x_raw / 10.0);
    let x_max = (x_raw / x_step).ceil() * x_step;
    let ops_max = nice_ceiling(series.iter().map(|p| p.ops as f64).fold(0.0, f64::max));
    let lat_max = nice_ceiling(series.iter().map(|p| p.p99_ms).fold(0.0, f64::max));
    let top = Panel { top: TOP1, x_max, y_max: ops_max };
    let bottom = Panel { top: TOP2, x_max, y_max: lat_max };

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{}" y="28" font-size="17" text-anchor="middle">{}</text>"#, WIDTH / 2.0, escape(title));

    top.axes(&mut out, "throughput (answered ops per second)", "ops/s");
    let ops: Vec<(f64, f64)> = series.iter().map(|p| (p.t as f64 + 0.5, p.ops as f64)).collect();
    top.line(&mut out, &ops, "#2563eb", 2.0);
    let errs: Vec<(f64, f64)> = series.iter().map(|p| (p.t as f64 + 0.5, p.errors as f64)).collect();
    if errs.iter().any(|(_, e)| *e > 0.0) {
        top.line(&mut out, &errs, "#dc2626", 1.0);
    }
    top.events(&mut out, events);

    bottom.axes(&mut out, "latency per second (p99 red, p50 grey)", "milliseconds");
    // Seconds with no answered op have no latency: leave them out rather than draw a false 0.
    let p99: Vec<(f64, f64)> = series.iter().filter(|p| p.ops > 0).map(|p| (p.t as f64 + 0.5, p.p99_ms)).collect();
    let p50: Vec<(f64, f64)> = series.iter().filter(|p| p.ops > 0).map(|p| (p.t as f64 + 0.5, p.p50_ms)).collect();
    bottom.line(&mut out, &p50, "#9ca3af", 1.5);
    bottom.line(&mut out, &p99, "#dc2626", 2.0);
    bottom.events(&mut out, events);

    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555">blue: answered ops/s; red (top): errors/s; dashed: events</text>"##,
        WIDTH - RIGHT,
        HEIGHT - 8.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags open and close in order (a tiny well-formedness check; no XML crate needed).
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else { return false };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        stack.is_empty()
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert!((nice_ceiling(0.03) - 0.05).abs() < 1e-12);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn plot_is_well_formed_and_marks_events() {
        let series: Vec<SecondPoint> = (0..30)
            .map(|t| SecondPoint {
                t,
                ops: if (10..13).contains(&t) { 0 } else { 1500 + t * 3 },
                errors: if t == 10 { 40 } else { 0 },
                p50_ms: 2.5,
                p99_ms: 9.0 + t as f64,
            })
            .collect();
        let events =
            vec![Event { t: 10.0, label: "kill-region shanghai".into() }, Event { t: 15.5, label: "start-region <shanghai> & co".into() }];
        let svg = plot("hot-packets: closed loop", &series, &events);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced(&svg), "unbalanced svg:\n{svg}");
        assert_eq!(svg.matches("<polyline").count(), 4, "ops, errors, p50, p99");
        assert_eq!(svg.matches("stroke-dasharray").count(), 4, "two events in two panels");
        assert!(svg.contains("&lt;shanghai&gt; &amp; co"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_plot_is_still_valid() {
        let svg = plot("nothing", &[], &[]);
        assert!(balanced(&svg));
        assert!(!svg.contains("NaN"));
        assert_eq!(svg.matches("<polyline").count(), 0);
    }
}
