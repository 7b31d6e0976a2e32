//! The side-by-side bench's latency distributions, drawn to PNG with plotters: one line per
//! server, the share of deliveries (or tablets) at or under each time.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Where the text's font is looked for (Debian's `fonts-dejavu-core`), unless
/// `SIDEBYSIDE_FONT` names another TrueType file.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font plotters draws text with; false (and says why) when there is none.
pub fn font() -> bool {
    let path = std::env::var("SIDEBYSIDE_FONT").unwrap_or_else(|_| FONT.into());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("no plots: the font {path} cannot be read ({e}); install fonts-dejavu-core or set SIDEBYSIDE_FONT");
            return false;
        }
    };
    // plotters keeps fonts for the life of the program.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    if register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
        eprintln!("no plots: {path} is not a font plotters can read");
        return false;
    }
    true
}

/// Where the plots go: `SIDEBYSIDE_PLOTS`, or `target/sidebyside` in the workspace.
pub fn dir() -> PathBuf {
    std::env::var_os("SIDEBYSIDE_PLOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sidebyside"))
}

/// Where the time axis ends: past the slowest series' 99.5th percentile, so that one long
/// tail does not flatten every curve against the left edge.
const AXIS_QUANTILE: f64 = 0.995;

/// The distributions of `series` (each sorted, in milliseconds) as cumulative curves,
/// written to `path`.
pub fn cdf(
    path: &Path,
    title: &str,
    what: &str,
    series: &[(&str, &[f64])],
) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let end = series
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(_, v)| v[((v.len() - 1) as f64 * AXIS_QUANTILE).round() as usize])
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_labels(10)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("milliseconds (the axis ends past the slowest server's 99.5th percentile)")
        .y_desc(format!("% of {what} at or under"))
        .draw()?;
    for (i, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(curve(values, end), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// At most a thousand points of the cumulative curve of `sorted`, up to `end`.
fn curve(sorted: &[f64], end: f64) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(1_000).max(1);
    let share = |k: usize| 100.0 * (k + 1) as f64 / n as f64;
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .chain(n.checked_sub(1))
        .map(|k| (sorted[k], share(k)))
        .take_while(|(x, _)| *x <= end)
        .collect();
    // A tail past the axis runs flat to its edge.
    if sorted.last().is_some_and(|last| *last > end) {
        let under = sorted.partition_point(|x| *x <= end);
        points.push((end, 100.0 * under as f64 / n as f64));
    }
    points
}
