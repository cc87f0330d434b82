//! What the user sees: a JSONL metrics log (one line per optimizer step), a text progress
//! renderer (indicatif bar on a terminal, periodic plain lines otherwise), a loss-curve PNG
//! (plotters bitmap backend, text in an embedded font) and `summary.json`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::io::{atomic_write, IoError};

/// One optimizer step's metrics (one JSONL line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer step (1-based).
    pub step: u64,
    /// Fractional epoch at the start of the step's accumulation window.
    pub epoch: f64,
    /// Mean (unscaled) loss over the step's non-skipped micro-batches.
    pub loss: f64,
    /// Learning rate used by the step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training samples per second over the step.
    pub samples_per_sec: f64,
    /// Non-padding tokens per second over the step.
    pub tokens_per_sec: f64,
    /// Batches skipped so far (non-finite loss).
    pub skipped: u64,
}

/// Append-only JSONL metrics log (`metrics.jsonl`); flushed every line so a crash loses nothing.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Open `dir/metrics.jsonl`: truncated for a fresh run (`resumed_at: None`); for a run
    /// resumed from the checkpoint of optimizer step `s`, the steps after `s` that an
    /// interrupted run had already logged (and a torn last line) are dropped first, so the log
    /// holds every step once.
    pub fn open(dir: &Path, resumed_at: Option<u64>) -> Result<Self, IoError> {
        std::fs::create_dir_all(dir).map_err(|source| IoError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("metrics.jsonl");
        let append = resumed_at.is_some();
        if let (Some(step), true) = (resumed_at, path.is_file()) {
            let kept: String = read_metrics(&path)?
                .into_iter()
                .filter(|m| m.step <= step)
                .map(|m| serde_json::to_string(&m).unwrap_or_default() + "\n")
                .collect();
            atomic_write(&path, kept.as_bytes())?;
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|source| IoError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            out: BufWriter::new(f),
        })
    }

    /// Write one line.
    pub fn log(&mut self, m: &StepMetrics) -> Result<(), IoError> {
        let line = serde_json::to_string(m).unwrap_or_default();
        let io = |source| IoError::Io {
            path: self.path.clone(),
            source,
        };
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(|source| IoError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read a metrics log back (lines that do not parse are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, IoError> {
    let text = std::fs::read_to_string(path).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// End-of-run summary (`summary.json`). Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean loss of the first steps (a tenth of the run, 1 to 50 steps).
    pub initial_loss: f64,
    /// Mean loss of the last steps (the same window).
    pub final_loss: f64,
    /// Validation accuracy (`None` if not evaluated).
    pub val_accuracy: Option<f64>,
    /// Expected accuracy of uniform guessing over the val problems' options.
    pub chance_accuracy: Option<f64>,
    /// How validation ranked answers (e.g. "likelihood of 'The answer is X.'").
    pub val_method: Option<String>,
    /// Trainable (adapter) parameter count.
    pub trainable_params: usize,
    /// Optimizer steps run.
    pub steps: u64,
    /// Batches skipped (non-finite loss).
    pub skipped: u64,
    /// Seconds from start of training to the summary (validation included, loading excluded).
    pub wall_seconds: f64,
    /// Training samples per second (excluding validation).
    pub samples_per_second: f64,
}

impl Summary {
    /// Write `dir/summary.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, IoError> {
        let path = dir.join("summary.json");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        atomic_write(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Errors of the plot.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot draw loss curve: {message}")]
pub struct PlotError {
    /// Target file.
    pub path: PathBuf,
    /// Cause.
    pub message: String,
}

/// DejaVu Sans (its licence: `assets/font/LICENSE-DejaVu`), so the plot has text on any machine.
const PLOT_FONT: &[u8] = include_bytes!("../assets/font/DejaVuSans.ttf");

/// Draw the loss curve to a PNG: raw per-step loss (light) and an exponential moving average
/// (dark), with a title and numbered, labelled axes (x = optimizer step, y = loss). Returns
/// the axis ranges.
pub fn plot_loss_curve(
    path: &Path,
    points: &[(f64, f64)],
) -> Result<((f64, f64), (f64, f64)), PlotError> {
    use plotters::prelude::*;
    use plotters::style::{register_font, FontStyle};
    let perr = |e: String| PlotError {
        path: path.to_path_buf(),
        message: e,
    };
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        // Fails only on a malformed font, which the plot test would catch (no text drawn).
        let _ = register_font("sans-serif", FontStyle::Normal, PLOT_FONT);
    });
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return Err(perr("no finite points".into()));
    }
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = ((y0 - pad).max(0.0_f64.min(y0)), y1 + pad);
    {
        let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| perr(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Training loss", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| perr(e.to_string()))?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .x_desc("optimizer step")
            .y_desc("loss")
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .draw()
            .map_err(|e| perr(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(pts.clone(), RGBColor(150, 180, 230)))
            .map_err(|e| perr(e.to_string()))?
            .label("loss per step")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 180, 230)));
        let mut ema = Vec::with_capacity(pts.len());
        let alpha = 2.0 / ((pts.len() as f64 / 10.0).clamp(1.0, 50.0) + 1.0);
        let mut acc = pts[0].1;
        for &(x, y) in &pts {
            acc = alpha * y + (1.0 - alpha) * acc;
            ema.push((x, acc));
        }
        let dark = RGBColor(20, 60, 160);
        chart
            .draw_series(LineSeries::new(ema, dark.stroke_width(3)))
            .map_err(|e| perr(e.to_string()))?
            .label("moving average")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], dark.stroke_width(3))
            });
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| perr(e.to_string()))?;
        root.present().map_err(|e| perr(e.to_string()))?;
    }
    Ok(((x0, x1), (y0, y1)))
}

/// `1h02m03s` style.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}s", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64, loss: f64) -> StepMetrics {
        StepMetrics {
            step,
            epoch: step as f64 / 10.0,
            loss,
            lr: 1e-3,
            grad_norm: 0.5,
            samples_per_sec: 4.0,
            tokens_per_sec: 100.0,
            skipped: 0,
        }
    }

    #[test]
    fn metrics_log_appends_jsonl() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut l = MetricsLog::open(d.path(), None).unwrap();
            l.log(&m(1, 2.0)).unwrap();
        }
        {
            let mut l = MetricsLog::open(d.path(), Some(1)).unwrap();
            l.log(&m(2, 1.5)).unwrap();
        }
        let back = read_metrics(&d.path().join("metrics.jsonl")).unwrap();
        assert_eq!(back, vec![m(1, 2.0), m(2, 1.5)]);
        let first = std::fs::read_to_string(d.path().join("metrics.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        for k in [
            "step",
            "epoch",
            "loss",
            "lr",
            "grad_norm",
            "samples_per_sec",
            "tokens_per_sec",
            "skipped",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn loss_plot_is_a_png() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("loss.png");
        let pts: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                (
                    i as f64,
                    3.0 * (-(i as f64) / 60.0).exp() + 0.1 * ((i * 7 % 11) as f64 / 11.0),
                )
            })
            .collect();
        let (xr, yr) = plot_loss_curve(&p, &pts).unwrap();
        assert_eq!(xr, (0.0, 199.0));
        assert!(yr.0 < yr.1);
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[1..4], b"PNG");
        // Text is drawn: the title band above the plot and the tick labels left of it hold
        // dark pixels (without a font both stay white).
        let img = image::load_from_memory(&b).unwrap().to_luma8();
        let dark_in = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (x0..x1)
                .flat_map(|x| (y0..y1).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 128)
                .count()
        };
        assert!(dark_in(250, 550, 0, 40) > 50, "no title");
        assert!(dark_in(0, 60, 60, 420) > 100, "no y-axis labels");
        if let Ok(dst) = std::env::var("LAVIN_PLOT_OUT") {
            std::fs::copy(&p, dst).unwrap();
        }
        assert!(plot_loss_curve(&p, &[]).is_err());
        // A single point still draws.
        plot_loss_curve(&p, &[(1.0, 1.0)]).unwrap();
    }

    #[test]
    fn resumed_log_holds_every_step_once() {
        let d = tempfile::tempdir().unwrap();
        let step = |s: u64| m(s, s as f64);
        let mut log = MetricsLog::open(d.path(), None).unwrap();
        for s in 1..=7 {
            log.log(&step(s)).unwrap();
        }
        drop(log);
        // A crash mid-line after step 7; the run resumes from its step-4 checkpoint.
        let path = d.path().join("metrics.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 8, \"ep");
        std::fs::write(&path, text).unwrap();
        let mut log = MetricsLog::open(d.path(), Some(4)).unwrap();
        for s in 5..=9 {
            log.log(&step(s)).unwrap();
        }
        let steps: Vec<u64> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, (1..=9).collect::<Vec<_>>());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 9);
        // A fresh run starts the log over.
        drop(MetricsLog::open(d.path(), None).unwrap());
        assert!(read_metrics(&path).unwrap().is_empty());
    }

    #[test]
    fn summary_written_atomically() {
        let d = tempfile::tempdir().unwrap();
        let s = Summary {
            initial_loss: 6.1,
            final_loss: 2.0,
            val_accuracy: Some(0.6),
            chance_accuracy: Some(0.3),
            val_method: Some("likelihood".into()),
            trainable_params: 1000,
            steps: 10,
            skipped: 0,
            wall_seconds: 12.5,
            samples_per_second: 8.0,
        };
        let p = s.write(d.path()).unwrap();
        let back: Summary = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h02m03s");
        assert_eq!(format_duration(Duration::from_secs(61)), "1m01s");
        assert_eq!(format_duration(Duration::from_secs(7)), "7s");
    }
}
