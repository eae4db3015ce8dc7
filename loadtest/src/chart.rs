//! An SVG chart of a run: the fast clients' latency distribution and throughput over time.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::report::Report;

/// Writes the chart of `report` to `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(380);
    latency(report, &top).map_err(|e| anyhow::anyhow!("latency chart: {e}"))?;
    throughput(report, &bottom).map_err(|e| anyhow::anyhow!("throughput chart: {e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn latency(r: &Report, area: &Area<'_>) -> Result<(), Box<dyn std::error::Error>> {
    // x: the percentile's position on a "nines" scale: 50 → 0.3, 90 → 1, 99 → 2, 99.9 → 3 ...
    let nines = |p: f64| {
        if p >= 100.0 {
            5.0
        } else {
            -(1.0 - p / 100.0).log10()
        }
    };
    let points: Vec<(f64, f64)> = r
        .latency_curve
        .iter()
        .map(|&(p, ms)| (nines(p), ms))
        .collect();
    let max_ms = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Publish → receive latency, fast clients ({} clients, {} Hz, {} ev/s{})",
                r.config.clients,
                r.config.frequency_hz,
                r.config.rate,
                if r.config.immediate {
                    ", immediate"
                } else {
                    ""
                }
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5.2f64, 0f64..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if *x >= 5.0 {
                "max".to_owned()
            } else {
                format!("{p:.2}")
            }
        })
        .draw()?;
    chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())),
    )?;
    Ok(())
}

fn throughput(r: &Report, area: &Area<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let t_max = r.timeline.iter().map(|p| p.t_s).fold(1.0, f64::max);
    let y_max = r
        .timeline
        .iter()
        .map(|p| p.frames_per_s.max(p.events_per_s))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("Delivered per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since publishing started")
        .y_desc("per second")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            r.timeline.iter().map(|p| (p.t_s, p.frames_per_s)),
            RED.stroke_width(2),
        ))?
        .label("frames/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart
        .draw_series(LineSeries::new(
            r.timeline.iter().map(|p| (p.t_s, p.events_per_s)),
            GREEN.stroke_width(2),
        ))?
        .label("events/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
