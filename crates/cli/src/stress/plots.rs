//! Plots of a run, in SVG and PNG: RSS over cycles, the call latency histogram, and the outcome
//! mix over time. PNGs carry no text — plotters draws text on bitmaps only through a system
//! font library, which a plain machine lacks — so their titles are their file names and the
//! SVGs (whose text the viewer renders) carry the axes' labels.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

use super::report::{Latencies, Stats};

const SIZE: (u32, u32) = (900, 500);
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type Res = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes rss, latency and outcomes, each as .svg and .png, into `dir`.
pub fn write(dir: &Path, stats: &Stats) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for name in ["rss", "latency", "outcomes"] {
        let svg = dir.join(format!("{name}.svg"));
        {
            let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
            draw_any(&area, stats, true, name)?;
            area.present().map_err(err)?;
        }
        let png = dir.join(format!("{name}.png"));
        {
            let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
            draw_any(&area, stats, false, name)?;
            area.present().map_err(err)?;
        }
        written.push(svg.display().to_string());
        written.push(png.display().to_string());
    }
    Ok(written)
}

fn draw_any<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    stats: &Stats,
    text: bool,
    name: &str,
) -> Res {
    area.fill(&WHITE).map_err(err)?;
    match name {
        "rss" => rss(area, stats, text),
        "latency" => latency(area, stats, text),
        _ => outcomes(area, stats, text),
    }
}

fn builder<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    text: bool,
) -> ChartBuilder<'a, 'a, DB> {
    let mut b = ChartBuilder::on(area);
    b.margin(20);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    b
}

/// Axes with labels in SVG; none in PNG.
macro_rules! mesh {
    ($chart:expr, $x:expr, $y:expr, $text:expr) => {{
        // No mesh at all on a PNG: its tick labels would be text.
        if $text {
            $chart
                .configure_mesh()
                .x_desc($x)
                .y_desc($y)
                .draw()
                .map_err(err)
        } else {
            Ok(())
        }
    }};
}

fn rss<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, stats: &Stats, text: bool) -> Res {
    let rss = stats.rss.points();
    let max_x = rss.iter().map(|r| r.0).max().unwrap_or(1).max(1);
    let max_y = rss.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64 / 1024.0;
    let mut chart = builder(area, "RSS over cycles", text)
        .build_cartesian_2d(0..max_x, 0.0..max_y * 1.1)
        .map_err(err)?;
    mesh!(chart, "cycles", "RSS (MiB)", text)?;
    chart
        .draw_series(LineSeries::new(
            rss.iter().map(|&(c, kib)| (c, kib as f64 / 1024.0)),
            &COLOURS[0],
        ))
        .map_err(err)?;
    Ok(())
}

fn latency<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, stats: &Stats, text: bool) -> Res {
    // Buckets on a log scale: 0.1 ms … 10 s, five a decade, from the run's finer ones
    // (twenty a decade from 0.01 ms).
    let per = Latencies::PER_DECADE / 5;
    let below = Latencies::PER_DECADE; // 0.01 ms to 0.1 ms
    let mut counts = [0u64; 30];
    for (b, n) in stats.latencies.buckets() {
        counts[(b.saturating_sub(below) / per).min(29)] += n;
    }
    let max_y = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut chart = builder(area, "Call latency (log buckets, 0.1 ms to 10 s)", text)
        .build_cartesian_2d((0u32..29u32).into_segmented(), 0u64..max_y + max_y / 10 + 1)
        .map_err(err)?;
    mesh!(
        chart,
        "latency bucket (5 per decade from 0.1 ms)",
        "calls",
        text
    )?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(COLOURS[0].filled())
                .margin(2)
                .data(counts.iter().enumerate().map(|(i, &n)| (i as u32, n))),
        )
        .map_err(err)?;
    Ok(())
}

fn outcomes<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, stats: &Stats, text: bool) -> Res {
    // Rounds grouped into at most 100 windows; one line per outcome.
    let rounds = stats.outcome_rounds.points();
    let windows = rounds.len().clamp(1, 100);
    let per = rounds.len().div_ceil(windows).max(1);
    // Every outcome has a point in every window (0 where it did not occur).
    let mut series: BTreeMap<&str, Vec<(u64, u64)>> = rounds
        .iter()
        .flat_map(|r| r.1.keys())
        .map(|k| (k.as_str(), Vec::new()))
        .collect();
    for chunk in rounds.chunks(per) {
        let cycle = chunk.last().map(|r| r.0).unwrap_or(0);
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, m) in chunk {
            for (k, v) in m {
                *sum.entry(k.as_str()).or_default() += v;
            }
        }
        for (k, points) in series.iter_mut() {
            points.push((cycle, sum.get(k).copied().unwrap_or(0)));
        }
    }
    let max_x = rounds.last().map(|r| r.0).unwrap_or(1).max(1);
    let max_y = series
        .values()
        .flatten()
        .map(|p| p.1)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = builder(area, "Outcome mix over time", text)
        .build_cartesian_2d(0..max_x, 0..max_y + max_y / 10 + 1)
        .map_err(err)?;
    mesh!(chart, "cycles", "calls per window", text)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let drawn = chart
            .draw_series(LineSeries::new(points.iter().copied(), &colour))
            .map_err(err)?;
        if text {
            drawn
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}
