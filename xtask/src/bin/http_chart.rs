//! Draws docs/http-bench.svg from `cargo xtask bench`'s results: requests per second and p50/p99 latency per store.
//!
//! Usage: `http-chart RESULTS.json OUT.svg` (run by `cargo xtask bench`; needs the `chart` feature). plotters' SVG
//! backend writes text as `<text>` elements, so no font is read, and the file diffs as text between runs.

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

const SIZE: (u32, u32) = (1400, 640);
/// One colour per series, the same meaning in both panels: grey = /healthz, blue = many users, orange = hot user.
const FLOOR: RGBColor = RGBColor(150, 150, 150);
const MANY: RGBColor = RGBColor(31, 119, 180);
const MANY_LIGHT: RGBColor = RGBColor(140, 190, 225);
const HOT: RGBColor = RGBColor(230, 120, 20);
const HOT_LIGHT: RGBColor = RGBColor(245, 190, 130);

/// One bar series of a panel: legend label, colour, and the value per store.
struct Series {
    label: &'static str,
    color: RGBColor,
    values: Vec<f64>,
}

/// A grouped bar chart: one group per store, one bar per series, the value written above each bar.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    stores: &[String],
    series: &[Series],
    unit: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let max = series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    // x in hundredths of a group: group g spans [100 g, 100 g + 100), its bars the middle 80.
    let groups = stores.len().max(1) as i32;
    let centres: Vec<i32> = (0..groups).map(|g| g * 100 + 50).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..groups * 100).with_key_points(centres), 0.0..max.max(1.0) * 1.3)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| stores.get((x / 100) as usize).cloned().unwrap_or_default())
        .y_label_formatter(&|y| format_value(*y, unit))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let width = 80 / series.len().max(1) as i32;
    for (i, s) in series.iter().enumerate() {
        let bars = s.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(g, &v)| {
            let x = g as i32 * 100 + 10 + i as i32 * width;
            Rectangle::new([(x + 1, 0.0), (x + width - 1, v)], s.color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| anyhow!("{e}"))?
            .label(s.label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], s.color.filled()));
        let labels = s.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(g, &v)| {
            let x = g as i32 * 100 + 10 + i as i32 * width + width / 2;
            let style = TextStyle::from(("sans-serif", 10)).pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(format_value(v, unit), (x, v), style)
        });
        chart.draw_series(labels).map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
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
    let [results, out] = args.as_slice() else {
        return Err(anyhow!("usage: http-chart RESULTS.json OUT.svg"));
    };
    let results: Value = serde_json::from_str(&std::fs::read_to_string(results).context("reading the results")?)?;
    let stores_json = results["http"]["stores"].as_array().ok_or_else(|| anyhow!("no http results"))?;
    let stores: Vec<String> = stores_json.iter().map(|s| s["store"].as_str().unwrap_or("?").to_string()).collect();
    let get = |shape: &str, field: &str, scale: f64| -> Vec<f64> {
        stores_json.iter().map(|s| s["shapes"][shape][field].as_f64().map_or(f64::NAN, |v| v * scale)).collect()
    };
    let throughput = [
        Series { label: "GET /healthz (floor)", color: FLOOR, values: get("floor", "rps", 1.0) },
        Series { label: "GET /, many users", color: MANY, values: get("many", "rps", 1.0) },
        Series { label: "GET /, one hot user (429s)", color: HOT, values: get("hot", "rps", 1.0) },
    ];
    let latency = [
        Series { label: "many p50", color: MANY_LIGHT, values: get("many", "p50_us", 1e-3) },
        Series { label: "many p99", color: MANY, values: get("many", "p99_us", 1e-3) },
        Series { label: "hot p50", color: HOT_LIGHT, values: get("hot", "p50_us", 1e-3) },
        Series { label: "hot p99", color: HOT, values: get("hot", "p99_us", 1e-3) },
    ];
    let command = results["http"]["command"].as_str().unwrap_or("");
    let env = results["env"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
    let footer = format!("cargo xtask bench: {command}. {}", env.unwrap_or_default());

    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (body, foot) = root.split_vertically(SIZE.1 - 24);
    let (left, right) = body.split_horizontally(SIZE.0 / 2);
    panel(&left, "Requests per second (higher is better)", &stores, &throughput, "")?;
    panel(&right, "Latency, ms (lower is better)", &stores, &latency, "ms")?;
    foot.draw(&Text::new(footer, (10, 4), ("sans-serif", 11))).map_err(|e| anyhow!("{e}"))?;
    root.present().with_context(|| format!("writing {out}"))?;
    Ok(())
}
