//! docs/benchmarks.png: a horizontal bar per (case, peer), from 1.0 to
//! Berth's ratio on a log scale, green where Berth is better, red where worse.
//!
//! plotters draws the shapes into an RGB buffer; the text is laid out and
//! drawn here with ab_glyph (plotters' own ab_glyph text drops the glyphs'
//! side bearings, which runs "--" together), from a TTF read at run time.

use ab_glyph::{point, Font, FontVec, PxScale, ScaleFont};
use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::markdown::Verdict;
use crate::results::{Bench, Better};

/// One bar of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub ratio: f64,
    pub verdict: Verdict,
    /// Index of its benchmark, to separate the groups.
    pub group: usize,
}

/// A bar for each case and peer with a ratio, in the report's order.
pub fn bars(benches: &[Bench]) -> Vec<Bar> {
    let mut out = Vec::new();
    for (group, bench) in benches.iter().enumerate() {
        for case in &bench.cases {
            for (peer, _) in case.peers() {
                let Some(ratio) = case.ratio(peer).filter(|r| *r > 0.0) else {
                    continue;
                };
                let mut label = format!("{}: {} vs {}", bench.name, case.name, peer);
                if case.better == Better::Higher {
                    label.push_str(" (higher is better)");
                }
                out.push(Bar {
                    label,
                    ratio,
                    verdict: Verdict::of(ratio, case.better),
                    group,
                });
            }
        }
    }
    out
}

/// The x range: every ratio and 1.0, with room for the value labels, kept
/// within 1/100..100.
pub fn x_range(bars: &[Bar]) -> (f64, f64) {
    let lo = bars.iter().map(|b| b.ratio).fold(1.0, f64::min);
    let hi = bars.iter().map(|b| b.ratio).fold(1.0, f64::max);
    ((lo / 1.6).max(0.01), (hi * 1.6).min(100.0))
}

/// Round values for the x axis's ticks within lo..hi.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    const NICE: [f64; 20] = [
        0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0,
        20.0, 50.0, 100.0,
    ];
    NICE.into_iter().filter(|t| (lo..=hi).contains(t)).collect()
}

/// Reads a TrueType font for the chart's text.
pub fn load_font(ttf: Vec<u8>) -> Result<FontVec> {
    FontVec::try_from_vec(ttf).map_err(|e| anyhow!("not a TrueType font: {e}"))
}

const GREEN: RGBColor = RGBColor(46, 125, 50);
const RED: RGBColor = RGBColor(198, 40, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);
const LIGHT: RGBColor = RGBColor(225, 225, 225);

fn colour(v: Verdict) -> RGBColor {
    match v {
        Verdict::Better => GREEN,
        Verdict::Worse => RED,
        Verdict::Even => GREY,
    }
}

const ROW: u32 = 28;
const TOP: u32 = 78;
const BOTTOM: u32 = 56;
const PLOT: u32 = 720;
const RIGHT: u32 = 30;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Anchor {
    /// x is the left end, y the vertical centre.
    Left,
    /// x is the right end, y the vertical centre.
    Right,
    /// x is the horizontal centre, y the top.
    Top,
}

/// A text to draw once the shapes are drawn.
#[derive(Debug)]
struct Label {
    text: String,
    at: (i32, i32),
    size: f32,
    anchor: Anchor,
}

impl Label {
    fn new(text: impl Into<String>, at: (i32, i32), size: f32, anchor: Anchor) -> Self {
        Label {
            text: text.into(),
            at,
            size,
            anchor,
        }
    }
}

/// The advance width of `text` at `size` pixels.
fn text_width(font: &FontVec, size: f32, text: &str) -> f32 {
    let f = font.as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            w += f.kern(p, id);
        }
        w += f.h_advance(id);
        prev = Some(id);
    }
    w
}

/// Draws `label` in black into an RGB buffer `w` pixels wide.
fn draw_label(buf: &mut [u8], w: u32, font: &FontVec, label: &Label) {
    let f = font.as_scaled(PxScale::from(label.size));
    let width = text_width(font, label.size, &label.text);
    let (x, y) = (label.at.0 as f32, label.at.1 as f32);
    let middle = y + (f.ascent() + f.descent()) / 2.0;
    let (mut caret, baseline) = match label.anchor {
        Anchor::Left => (x, middle),
        Anchor::Right => (x - width, middle),
        Anchor::Top => (x - width / 2.0, y + f.ascent()),
    };
    let h = u32::try_from(buf.len() / 3).unwrap_or(0) / w.max(1);
    let mut prev = None;
    for c in label.text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        let glyph = id.with_scale_and_position(label.size, point(caret, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let b = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = b.min.x as i64 + i64::from(gx);
                let py = b.min.y as i64 + i64::from(gy);
                if px < 0 || py < 0 || px >= i64::from(w) || py >= i64::from(h) {
                    return;
                }
                let i = usize::try_from((py * i64::from(w) + px) * 3).unwrap_or(usize::MAX);
                if let Some(pixel) = buf.get_mut(i..i + 3) {
                    let keep = 1.0 - coverage.clamp(0.0, 1.0);
                    for v in pixel {
                        *v = (f32::from(*v) * keep).round() as u8;
                    }
                }
            });
        }
        caret += f.h_advance(id);
        prev = Some(id);
    }
}

/// Draws the chart; returns the PNG's bytes.
pub fn png(bars: &[Bar], title: &str, font: &FontVec) -> Result<Vec<u8>> {
    let widest = bars
        .iter()
        .map(|b| text_width(font, 15.0, &b.label))
        .fold(0.0, f32::max);
    let label_w = widest.ceil() as u32 + 24;
    let rows = u32::try_from(bars.len().max(1)).context("too many bars")?;
    let (w, h) = (label_w + PLOT + RIGHT, TOP + rows * ROW + BOTTOM);
    let mut buf = vec![0u8; usize::try_from(u64::from(w) * u64::from(h) * 3)?];
    let labels = {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let labels = shapes(&root, bars, title, font, label_w).context("drawing the chart")?;
        root.present().context("drawing the chart")?;
        labels
    };
    for label in &labels {
        draw_label(&mut buf, w, font, label);
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().context("encoding the PNG")?;
    writer.write_image_data(&buf).context("encoding the PNG")?;
    writer.finish().context("encoding the PNG")?;
    Ok(out)
}

/// Draws everything but the text; returns the text to draw.
fn shapes<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bars: &[Bar],
    title: &str,
    font: &FontVec,
    label_w: u32,
) -> Result<Vec<Label>> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let mut labels = vec![Label::new(title, (16, 22), 20.0, Anchor::Left)];
    root.fill(&WHITE).map_err(err)?;

    // Legend.
    let mut x = 16;
    for (v, text) in [
        (Verdict::Better, "Berth better"),
        (Verdict::Worse, "Berth worse"),
        (Verdict::Even, "even"),
    ] {
        root.draw(&Rectangle::new([(x, 46), (x + 14, 60)], colour(v).filled()))
            .map_err(err)?;
        labels.push(Label::new(text, (x + 20, 53), 14.0, Anchor::Left));
        x += 40 + text_width(font, 14.0, text).ceil() as i32;
    }

    let (lo, hi) = x_range(bars);
    let n = bars.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .margin_top(TOP)
        .margin_right(RIGHT)
        .x_label_area_size(BOTTOM)
        .y_label_area_size(label_w)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n)
        .map_err(err)?;
    // The axes, drawn here: plotters' mesh would draw text through its own
    // (absent) font backend.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(lo, n), (lo, 0.0), (hi, 0.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    for t in ticks(lo, hi) {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(t, 0.0), (t, n)],
                LIGHT.stroke_width(1),
            )))
            .map_err(err)?;
        let (tx, ty) = chart.backend_coord(&(t, 0.0));
        root.draw(&PathElement::new(
            vec![(tx, ty), (tx, ty + 5)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        labels.push(Label::new(format!("{t}x"), (tx, ty + 8), 13.0, Anchor::Top));
    }
    let (mx, my) = chart.backend_coord(&((lo * hi).sqrt(), 0.0));
    labels.push(Label::new(
        "Berth's median / the peer's median (log scale)",
        (mx, my + 28),
        14.0,
        Anchor::Top,
    ));

    for (i, bar) in bars.iter().enumerate() {
        // Row i from the top: its centre on the y axis.
        let y = n - i as f64 - 0.5;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(1.0, y - 0.3), (bar.ratio, y + 0.3)],
                colour(bar.verdict).filled(),
            )))
            .map_err(err)?;
        let (px, py) = chart.backend_coord(&(lo, y));
        labels.push(Label::new(
            bar.label.clone(),
            (px - 10, py),
            15.0,
            Anchor::Right,
        ));
        let (ex, ey) = chart.backend_coord(&(bar.ratio, y));
        let value = format!("{:.2}x", bar.ratio);
        labels.push(if bar.ratio < 1.0 {
            Label::new(value, (ex - 6, ey), 14.0, Anchor::Right)
        } else {
            Label::new(value, (ex + 6, ey), 14.0, Anchor::Left)
        });
        // A line between two benchmarks.
        if bars.get(i + 1).is_some_and(|next| next.group != bar.group) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(lo, y - 0.5), (hi, y - 0.5)],
                    GREY.stroke_width(1),
                )))
                .map_err(err)?;
        }
    }
    // The 1.0 line: Berth and the peer alike.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, n)],
            BLACK.stroke_width(2),
        )))
        .map_err(err)?;
    if bars.is_empty() {
        let (px, py) = chart.backend_coord(&(lo, 0.5));
        labels.push(Label::new(
            "no case with a peer to compare",
            (px + 10, py),
            15.0,
            Anchor::Left,
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::parse;

    const TEXT: &str = concat!(
        r#"{"bench":"runtime","case":"run true","unit":"ms","better":"lower","samples":5,"reference":"berth","subjects":{"berth":{"median":10,"min":9,"max":12},"runc":{"median":20,"min":19,"max":30},"crun":{"median":8,"min":7,"max":9}}}"#,
        "\n",
        r#"{"bench":"run","case":"per second","unit":"containers/s","better":"higher","samples":1,"reference":"berthd","subjects":{"berthd":{"median":21,"min":21,"max":21},"containerd":{"median":10,"min":10,"max":10},"zero":{"median":0,"min":0,"max":0}}}"#,
        "\n"
    );

    #[test]
    fn a_bar_per_case_and_peer_with_a_ratio() -> Result<()> {
        let bars = bars(&parse(TEXT)?);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "runtime: run true vs runc",
                "runtime: run true vs crun",
                "run: per second vs containerd (higher is better)",
            ]
        );
        assert_eq!(bars[0].ratio, 0.5);
        assert_eq!(bars[0].verdict, Verdict::Better);
        assert_eq!(bars[1].verdict, Verdict::Worse);
        assert_eq!(bars[2].verdict, Verdict::Better);
        assert_eq!(bars.iter().map(|b| b.group).collect::<Vec<_>>(), [0, 0, 1]);
        Ok(())
    }

    #[test]
    fn the_range_holds_one_and_every_ratio() -> Result<()> {
        let bars = bars(&parse(TEXT)?);
        let (lo, hi) = x_range(&bars);
        assert!(lo < 0.5 && hi > 2.1, "{lo} {hi}");
        assert_eq!(x_range(&[]), (1.0 / 1.6, 1.6));
        assert_eq!(ticks(0.3, 2.2), [0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0]);
        Ok(())
    }

    #[test]
    fn not_a_font() {
        assert!(load_font(b"not a font".to_vec()).is_err());
    }
}
