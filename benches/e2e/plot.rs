//! The latency CDF plot (latency.png).

use crate::report::Latency;
use crate::results::Summary;
use plotters::prelude::*;
use std::fs;
use std::path::Path;

/// DejaVu Sans (Debian's fonts-dejavu-core), read at run time: plotters' `ab_glyph`
/// feature draws text from a font it is handed, without fontconfig.
pub fn register_font() -> Result<(), String> {
    let candidates = [
        std::env::var("PLUTUS_BENCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
        "/usr/share/fonts/dejavu/DejaVuSans.ttf".into(),
    ];
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        if let Ok(bytes) = fs::read(c) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{c}: not a usable font"));
        }
    }
    Err("no DejaVuSans.ttf found (install fonts-dejavu-core or set PLUTUS_BENCH_FONT)".into())
}

/// CDF of each latency series on a log time axis.
pub fn plot_latency(path: &Path, series: &[Latency]) -> Result<(), String> {
    let mut series: Vec<&Latency> = series.iter().filter(|l| !l.lat.is_empty()).collect();
    series.sort_by_key(|l| !l.plutus);
    if series.is_empty() {
        return Err("no latency series".into());
    }
    register_font()?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let lo = series
        .iter()
        .flat_map(|l| l.lat.iter())
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.05);
    let hi = series
        .iter()
        .flat_map(|l| l.lat.iter())
        .copied()
        .fold(0.0, f64::max);
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );

    // The legend goes in a strip below the chart, where it cannot hide a curve.
    let (w, h) = (1200u32, 660 + 30 * series.len() as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, strip) = root.split_vertically(h - 30 * series.len() as u32 - 10);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "close in outbox -> final name in SFTP inbox (CDF, loopback sshd, 2 cores)",
            ("sans-serif", 26),
        )
        .margin(20)
        .margin_right(45)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of files delivered")
        .x_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        })
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, l) in series.iter().enumerate() {
        let mut v = l.lat.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut pts = Vec::with_capacity(v.len() * 2);
        for (k, x) in v.iter().enumerate() {
            let x = x.max(lo);
            pts.push((x, k as f64 / n));
            pts.push((x, (k + 1) as f64 / n));
        }
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(3)))
            .map_err(|x| e(&x))?;
        let s = Summary::of(&l.lat);
        let y = 30 * i as i32 + 15;
        strip
            .draw(&PathElement::new(
                vec![(90, y), (140, y)],
                color.stroke_width(4),
            ))
            .map_err(|x| e(&x))?;
        strip
            .draw(&Text::new(
                format!(
                    "{}: p50 {}, p90 {}, p99 {}, max {}",
                    l.name,
                    fmt_ms(s.p50),
                    fmt_ms(s.p90),
                    fmt_ms(s.p99),
                    fmt_ms(s.max)
                ),
                (152, y - 10),
                ("sans-serif", 19),
            ))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Line colours: plutus-sync's series come first, in the warm colours.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

pub fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}
