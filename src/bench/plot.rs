//! `--plot FILE.svg` of `bench copy` and `bench foreground`: the per-second samples the bench already measured (the
//! ones `--json` prints) drawn as an SVG with `plotters` (its SVG backend only: no fonts are read, the viewer sets
//! the text). The file is checked before the bench runs, so a path that cannot be written costs no benchmark.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Size of a chart panel in pixels (the foreground plot stacks two).
const PANEL: (u32, u32) = (960, 400);

/// Font size of the captions and of the labels, in plotters' units.
const CAPTION_FONT: u32 = 22;
const LABEL_FONT: u32 = 15;

/// The `--plot` file, made writable before the bench runs: an empty temporary file beside it, renamed onto it once
/// the SVG is written, and removed if the bench fails (an earlier plot at the path is kept until then).
pub(super) struct PlotFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl PlotFile {
    /// Checks that `path` can be written, before the bench runs: its directory exists, it is not a directory, and a
    /// file can be created beside it.
    pub(super) fn create(path: &Path) -> Result<Self> {
        let name = path.file_name().filter(|_| !path.is_dir()).ok_or_else(|| {
            anyhow!(
                "--plot {} is a directory: give a file to write, e.g. {}",
                path.display(),
                path.join("bench.svg").display()
            )
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                bail!("--plot {}: {} is not a directory: give a file in a directory", path.display(), dir.display())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "--plot {}: directory {} does not exist: create it, or give a file in an existing directory",
                path.display(),
                dir.display()
            ),
            Err(e) => bail!(
                "--plot {}: cannot reach directory {} ({e}): give a file in a directory you can write",
                path.display(),
                dir.display()
            ),
        }
        let temp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), uuid::Uuid::new_v4().simple()));
        let file = File::options().write(true).create_new(true).open(&temp).map_err(|e| {
            anyhow!(
                "--plot {}: cannot create a file in {} ({e}): give a file in a directory you can write",
                path.display(),
                dir.display()
            )
        })?;
        Ok(Self { path: path.to_path_buf(), temp, file: Some(file) })
    }

    /// Writes `svg` and puts it at the path.
    pub(super) fn write(mut self, svg: &str) -> Result<()> {
        let mut file = self.file.take().expect("written once");
        file.write_all(svg.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write the plot {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.path)
            .with_context(|| format!("move the plot {} to {}", self.temp.display(), self.path.display()))?;
        Ok(())
    }
}

impl Drop for PlotFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A series of one-second windows: the value of window `i` is drawn at `start + i + 1` seconds (its end).
pub(super) struct Windows<'a> {
    /// Seconds from the plot's origin to the start of the first window.
    pub start: f64,
    pub values: &'a [f64],
}

impl Windows<'_> {
    fn points(&self) -> impl Iterator<Item = (f64, f64)> + Clone + '_ {
        self.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (self.start + i as f64 + 1.0, v))
    }

    fn end(&self) -> f64 {
        self.start + self.values.len() as f64
    }

    fn max(&self) -> f64 {
        self.values.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max)
    }
}

/// The plot of `bench copy`: MB/s of each whole one-second window (`rate`, in MB/s) against `max_rate` (MB/s).
pub(super) fn copy_svg(caption: &str, rate: &Windows<'_>, max_rate: Option<f64>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PANEL).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        rate_panel(&root, caption, rate, max_rate, rate.end(), None)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The plot of `bench foreground`: the hot copy's MB/s per second against `max_rate` (MB/s) above, the commit
/// latency's p50 and p99 per second (ms) below, on one time axis from the committers' start; `copying` is when the
/// hot copy ran (seconds), shaded in both.
pub(super) fn foreground_svg(
    caption: &str,
    rate: &Windows<'_>,
    max_rate: f64,
    p50: &Windows<'_>,
    p99: &Windows<'_>,
    copying: (f64, f64),
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PANEL.0, PANEL.1 * 2)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(PANEL.1);
        let end = rate.end().max(p50.end()).max(p99.end()).max(copying.1);
        rate_panel(&top, caption, rate, Some(max_rate), end, Some(copying))?;
        let top_y = (p99.max().max(p50.max()) * 1.1).max(0.001);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("commit latency per second", ("sans-serif", CAPTION_FONT))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_end(end), 0.0..top_y)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ms")
            .x_labels(x_labels(end))
            .x_label_formatter(&seconds)
            .y_label_formatter(&|v| match top_y {
                t if t >= 10.0 => format!("{v:.0}"),
                t if t >= 1.0 => format!("{v:.1}"),
                _ => format!("{v:.3}"),
            })
            .label_style(("sans-serif", LABEL_FONT))
            .axis_desc_style(("sans-serif", LABEL_FONT))
            .draw()
            .map_err(plot_error)?;
        shade(&mut chart, copying, top_y)?;
        for (series, name, colour) in [(p50, "p50", BLUE), (p99, "p99", MAGENTA)] {
            chart
                .draw_series(LineSeries::new(series.points(), colour.stroke_width(2)).point_size(3))
                .map_err(plot_error)?
                .label(format!("{name} of the commits begun in each second"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A panel of MB/s per window from 0 to `end` seconds, with `max_rate` as a horizontal line across it.
fn rate_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    rate: &Windows<'_>,
    max_rate: Option<f64>,
    end: f64,
    copying: Option<(f64, f64)>,
) -> Result<()> {
    let top_y = (rate.max().max(max_rate.unwrap_or(0.0)) * 1.25).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", CAPTION_FONT))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_end(end), 0.0..top_y)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MB/s")
        .x_labels(x_labels(end))
        .x_label_formatter(&seconds)
        .label_style(("sans-serif", LABEL_FONT))
        .axis_desc_style(("sans-serif", LABEL_FONT))
        .draw()
        .map_err(plot_error)?;
    if let Some(span) = copying {
        shade(&mut chart, span, top_y)?;
    }
    if let Some(limit) = max_rate {
        chart
            .draw_series(LineSeries::new([(0.0, limit), (x_end(end), limit)], RED.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("--max-rate {limit} MB/s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .draw_series(LineSeries::new(rate.points(), BLUE.stroke_width(2)).point_size(3))
        .map_err(plot_error)?
        .label("MB/s of each whole 1 s window")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Right end of the time axis for samples up to `end` seconds: half a second more, so the last point is not drawn on
/// the frame.
fn x_end(end: f64) -> f64 {
    end.max(0.5) + 0.5
}

/// How many labels the time axis asks for: one a second up to 16, so that short runs are labelled in whole seconds.
fn x_labels(end: f64) -> usize {
    (end.ceil() as usize + 1).clamp(2, 16)
}

/// A time axis label: whole seconds without decimals.
fn seconds(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The time from `span.0` to `span.1` seconds (the hot copy) shaded, with its legend entry.
fn shade<'a>(chart: &mut Chart<'a, 'a>, span: (f64, f64), top_y: f64) -> Result<()> {
    let colour = GREEN.mix(0.12);
    chart
        .draw_series([Rectangle::new([(span.0, 0.0), (span.1, top_y)], colour.filled())])
        .map_err(plot_error)?
        .label("hot copy running")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], colour.filled()));
    Ok(())
}

fn legend<'a>(chart: &mut Chart<'a, 'a>, position: SeriesLabelPosition) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", LABEL_FONT))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("draw the plot: {e}")
}
