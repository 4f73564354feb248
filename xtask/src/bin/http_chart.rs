//! Draws docs/http-bench.png from `cargo xtask bench`'s results: requests per second and p50/p99 latency per store.
//!
//! Usage: `http-chart RESULTS.json OUT.png FONT.ttf` (run by `cargo xtask bench`; needs the `chart` feature). The
//! bars are drawn by hand into an RGB buffer and text is rasterised from a TrueType font read at run time, so the
//! chart needs two small crates and no system graphics libraries.

use std::path::Path;

use ab_glyph::{point, Font, FontVec, PxScale, ScaleFont};
use anyhow::{anyhow, Context, Result};
use serde_json::Value;

const W: u32 = 1400;
const H: u32 = 640;
const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];
/// One colour per series, the same meaning in both panels: grey = /healthz, blue = many users, orange = hot user.
const FLOOR: [u8; 3] = [150, 150, 150];
const MANY: [u8; 3] = [31, 119, 180];
const MANY_LIGHT: [u8; 3] = [140, 190, 225];
const HOT: [u8; 3] = [230, 120, 20];
const HOT_LIGHT: [u8; 3] = [245, 190, 130];

struct Canvas {
    px: Vec<u8>,
    font: FontVec,
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Center,
    Right,
}

impl Canvas {
    fn new(font: FontVec) -> Self {
        let px = WHITE.iter().copied().cycle().take((W * H * 3) as usize).collect();
        Self { px, font }
    }

    fn blend(&mut self, x: i32, y: i32, c: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= W as i32 || y >= H as i32 {
            return;
        }
        let i = ((y as u32 * W + x as u32) * 3) as usize;
        let a = alpha.clamp(0.0, 1.0);
        for (channel, target) in self.px[i..i + 3].iter_mut().zip(c) {
            let old = f32::from(*channel);
            *channel = (old + (f32::from(target) - old) * a).round() as u8;
        }
    }

    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: [u8; 3]) {
        for y in y0.round() as i32..y1.round() as i32 {
            for x in x0.round() as i32..x1.round() as i32 {
                self.blend(x, y, c, 1.0);
            }
        }
    }

    fn text_width(&self, size: f32, s: &str) -> f32 {
        let scaled = self.font.as_scaled(PxScale::from(size));
        s.chars().map(|ch| scaled.h_advance(self.font.glyph_id(ch))).sum()
    }

    /// Draws `s` with its baseline at `y`; `x` is its left edge, centre or right edge as `align` says.
    fn text(&mut self, size: f32, x: f32, y: f32, s: &str, c: [u8; 3], align: Align) {
        let width = self.text_width(size, s);
        let mut pen = match align {
            Align::Left => x,
            Align::Center => x - width / 2.0,
            Align::Right => x - width,
        };
        let mut glyphs = Vec::new();
        {
            let scaled = self.font.as_scaled(PxScale::from(size));
            for ch in s.chars() {
                let id = self.font.glyph_id(ch);
                glyphs.push(id.with_scale_and_position(size, point(pen, y)));
                pen += scaled.h_advance(id);
            }
        }
        for glyph in glyphs {
            if let Some(outlined) = self.font.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                let mut cover = Vec::new();
                outlined.draw(|gx, gy, a| cover.push((b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32, a)));
                for (px, py, a) in cover {
                    self.blend(px, py, c, a);
                }
            }
        }
    }
}

/// One bar series of a panel: legend label, colour, and the value per store.
struct Series {
    label: &'static str,
    color: [u8; 3],
    values: Vec<f64>,
}

/// A grouped bar chart in the box (x0, y0)–(x1, y1): one group per store, one bar per series, value on top.
fn panel(c: &mut Canvas, area: (f32, f32, f32, f32), title: &str, stores: &[String], series: &[Series], unit: &str) {
    let (x0, y0, x1, y1) = area;
    let (left, top, bottom) = (x0 + 60.0, y0 + 70.0, y1 - 50.0);
    c.text(18.0, (x0 + x1) / 2.0, y0 + 22.0, title, INK, Align::Center);
    // Legend.
    let mut lx = left;
    for s in series {
        c.rect(lx, y0 + 36.0, lx + 12.0, y0 + 48.0, s.color);
        c.text(12.0, lx + 16.0, y0 + 47.0, s.label, INK, Align::Left);
        lx += 28.0 + c.text_width(12.0, s.label);
    }
    let max = series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let step = nice_step(max / 5.0);
    let top_value = (max / step).ceil().max(1.0) * step;
    let y_of = |v: f64| bottom - ((v / top_value) as f32) * (bottom - top);
    let mut v = 0.0;
    while v <= top_value + step / 2.0 {
        let y = y_of(v);
        c.rect(left, y, x1 - 10.0, y + 1.0, GRID);
        c.text(11.0, left - 6.0, y + 4.0, &format_value(v, unit), INK, Align::Right);
        v += step;
    }
    let group_w = (x1 - 10.0 - left) / stores.len().max(1) as f32;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f32;
    for (g, store) in stores.iter().enumerate() {
        let gx = left + g as f32 * group_w + group_w * 0.1;
        for (i, s) in series.iter().enumerate() {
            let value = s.values.get(g).copied().unwrap_or(f64::NAN);
            if !value.is_finite() {
                continue;
            }
            let bx = gx + i as f32 * bar_w;
            c.rect(bx + 1.0, y_of(value), bx + bar_w - 1.0, bottom, s.color);
            c.text(9.5, bx + bar_w / 2.0, y_of(value) - 3.0, &format_value(value, unit), INK, Align::Center);
        }
        // Two-word store names go on two lines so they fit under their group.
        let mut line_y = bottom + 18.0;
        for part in store.splitn(2, ' ') {
            c.text(13.0, gx + group_w * 0.4, line_y, part, INK, Align::Center);
            line_y += 16.0;
        }
    }
    c.rect(left, bottom, x1 - 10.0, bottom + 1.0, INK);
}

/// 1, 2 or 5 times a power of ten, at least `raw`: tick spacing people read at a glance.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "ms" if v < 10.0 => format!("{v:.2}"),
        "ms" => format!("{v:.1}"),
        _ if v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        _ => format!("{v:.0}"),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, out, font] = args.as_slice() else {
        return Err(anyhow!("usage: http-chart RESULTS.json OUT.png FONT.ttf"));
    };
    let results: Value = serde_json::from_str(&std::fs::read_to_string(results).context("reading the results")?)?;
    let font = FontVec::try_from_vec(std::fs::read(font).with_context(|| format!("reading the font {font}"))?)
        .map_err(|e| anyhow!("bad font: {e}"))?;
    let stores_json = results["http"]["stores"].as_array().ok_or_else(|| anyhow!("no http results"))?;
    let stores: Vec<String> = stores_json.iter().map(|s| s["store"].as_str().unwrap_or("?").to_string()).collect();
    let get = |shape: &str, field: &str, scale: f64| -> Vec<f64> {
        stores_json.iter().map(|s| s["shapes"][shape][field].as_f64().map_or(f64::NAN, |v| v * scale)).collect()
    };
    let mut c = Canvas::new(font);
    let throughput = [
        Series { label: "GET /healthz (floor)", color: FLOOR, values: get("floor", "rps", 1.0) },
        Series { label: "GET /, many users", color: MANY, values: get("many", "rps", 1.0) },
        Series { label: "GET /, one hot user (429s)", color: HOT, values: get("hot", "rps", 1.0) },
    ];
    panel(
        &mut c,
        (0.0, 0.0, 700.0, H as f32 - 30.0),
        "Requests per second (higher is better)",
        &stores,
        &throughput,
        "",
    );
    let latency = [
        Series { label: "many p50", color: MANY_LIGHT, values: get("many", "p50_us", 1e-3) },
        Series { label: "many p99", color: MANY, values: get("many", "p99_us", 1e-3) },
        Series { label: "hot p50", color: HOT_LIGHT, values: get("hot", "p50_us", 1e-3) },
        Series { label: "hot p99", color: HOT, values: get("hot", "p99_us", 1e-3) },
    ];
    panel(&mut c, (700.0, 0.0, W as f32, H as f32 - 30.0), "Latency, ms (lower is better)", &stores, &latency, "ms");
    let command = results["http"]["command"].as_str().unwrap_or("");
    let env = results["env"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
    let footer = format!("cargo xtask bench: {command}. {}", env.unwrap_or_default());
    c.text(11.0, 10.0, H as f32 - 10.0, &footer, INK, Align::Left);
    write_png(Path::new(out), &c.px)
}

fn write_png(path: &Path, px: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), W, H);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(px)?;
    writer.finish()?;
    Ok(())
}
