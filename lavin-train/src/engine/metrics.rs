//! What burn-train shows and logs for a LaVIN run: per optimizer step the loss, the learning
//! rate (burn-train's own metric), the gradient norm and tokens per second; per validation
//! chunk the accuracy. And how they are shown ([`renderer`]): burn-train's dashboard on a
//! terminal, plain lines elsewhere.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricDefinition, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::LearnerSummary;

use crate::config::TrainConfig;
use crate::engine::model::{StepOutput, ValOutput};
use crate::report::format_duration;

impl Adaptor<StepOutput> for StepOutput {
    fn adapt(&self) -> StepOutput {
        *self
    }
}

impl Adaptor<ValOutput> for ValOutput {
    fn adapt(&self) -> ValOutput {
        *self
    }
}

/// Which number of an optimizer step a [`StepMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepValue {
    /// Mean loss of the step's micro-batches.
    Loss,
    /// Global gradient norm before clipping.
    GradNorm,
    /// Target tokens per second over the step.
    TokensPerSecond,
}

/// A number of each optimizer step, as a burn-train numeric metric.
#[derive(Clone)]
pub struct StepMetric {
    what: StepValue,
    name: MetricName,
    state: NumericMetricState,
}

impl StepMetric {
    /// The metric of `what`.
    pub fn new(what: StepValue) -> Self {
        let name = match what {
            StepValue::Loss => "Loss",
            StepValue::GradNorm => "Grad Norm",
            StepValue::TokensPerSecond => "Tokens per Second",
        };
        Self {
            what,
            name: Arc::new(name.into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for StepMetric {
    type Input = StepOutput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: (self.what == StepValue::TokensPerSecond).then(|| "tok/s".into()),
            higher_is_better: self.what == StepValue::TokensPerSecond,
        }
        .into()
    }

    fn update(&mut self, item: &StepOutput, _meta: &MetricMetadata) -> SerializedEntry {
        let value = match self.what {
            StepValue::Loss => item.loss,
            StepValue::GradNorm => item.grad_norm.unwrap_or(f64::NAN),
            StepValue::TokensPerSecond => item.stats.tokens as f64 / item.seconds.max(1e-9),
        };
        let (precision, unit) = match self.what {
            StepValue::TokensPerSecond => (0, Some("tok/s")),
            _ => (4, None),
        };
        let mut format = FormatOptions::new(self.name()).precision(precision);
        if let Some(u) = unit {
            format = format.unit(u);
        }
        self.state.update(value, 1, format)
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for StepMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Validation accuracy: the share of problems whose best-scored option is the answer.
#[derive(Clone)]
pub struct AccuracyMetric {
    name: MetricName,
    state: NumericMetricState,
}

impl Default for AccuracyMetric {
    fn default() -> Self {
        Self {
            name: Arc::new("Accuracy".into()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for AccuracyMetric {
    type Input = ValOutput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("%".into()),
            higher_is_better: true,
        }
        .into()
    }

    fn update(&mut self, item: &ValOutput, _meta: &MetricMetadata) -> SerializedEntry {
        let acc = 100.0 * item.correct as f64 / item.problems.max(1) as f64;
        self.state.update(
            acc,
            item.problems,
            FormatOptions::new(self.name()).unit("%").precision(1),
        )
    }

    fn clear(&mut self) {
        self.state.reset();
    }
}

impl Numeric for AccuracyMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// A value in 4 significant figures (whole numbers above 1000).
fn short(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 {
        format!("{v}")
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 1e-3 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// Plain lines print at most this often (and at the first and the last step).
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(10);

/// The renderer of one rank. Rank 0 with [`TrainConfig::tui`], when stdout and stderr are
/// terminals and this build has the `tui` feature: burn-train's dashboard ([`Dashboard`], one
/// per process at a time). Otherwise (`--no-tui`, CI, logs, pipes) [`LineRenderer`]: a bar on a
/// terminal, plain lines elsewhere; other ranks stay quiet.
pub fn renderer(cfg: &TrainConfig, lead: bool) -> Renderer {
    #[cfg(all(feature = "tui", unix))]
    if lead && cfg.tui && std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        if let Some(d) = Dashboard::open(cfg.epochs) {
            return Renderer(Box::new(d));
        }
    }
    let _ = cfg;
    Renderer(Box::new(LineRenderer::new(LINE_EVERY, !lead)))
}

/// The renderer [`renderer`] chose, as the one type `SupervisedTraining::renderer` takes.
pub struct Renderer(Box<dyn MetricsRenderer>);

impl MetricsRendererTraining for Renderer {
    fn update_train(&mut self, state: MetricState) {
        self.0.update_train(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.0.update_valid(state);
    }

    fn render_train(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        self.0.render_train(item, indicators);
    }

    fn render_valid(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        self.0.render_valid(item, indicators);
    }

    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.0.on_train_end(summary)
    }
}

impl MetricsRendererEvaluation for Renderer {
    fn update_test(&mut self, name: EvaluationName, state: MetricState) {
        self.0.update_test(name, state);
    }

    fn render_test(&mut self, item: EvaluationProgress, indicators: Vec<ProgressType>) {
        self.0.render_test(item, indicators);
    }

    fn on_test_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.0.on_test_end(summary)
    }
}

impl MetricsRenderer for Renderer {
    fn manual_close(&mut self) {
        self.0.manual_close();
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.0.register_metric(definition);
    }
}

/// burn-train's renderer for LaVIN runs without the dashboard: on a terminal a progress bar
/// with ETA and the latest values; elsewhere (logs, CI) plain lines: the first step, one line
/// every `every`, and the last step. (burn-train's own plain renderer prints no values.)
pub struct LineRenderer {
    names: BTreeMap<String, String>,
    latest: BTreeMap<String, String>,
    start: Instant,
    last_print: Option<Instant>,
    every: Duration,
    bar: Option<indicatif::ProgressBar>,
    /// Only rank 0 shows progress.
    quiet: bool,
}

impl LineRenderer {
    /// A renderer that prints at most every `every` (`quiet`: never); a bar when stderr is a
    /// terminal.
    pub fn new(every: Duration, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise} ETA {eta}] {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        Self {
            bar,
            ..Self::plain(every, quiet)
        }
    }

    /// Plain lines only, terminal or not.
    pub(crate) fn plain(every: Duration, quiet: bool) -> Self {
        Self {
            names: BTreeMap::new(),
            latest: BTreeMap::new(),
            start: Instant::now(),
            last_print: None,
            every,
            bar: None,
            quiet,
        }
    }

    fn remember(&mut self, state: MetricState, prefix: &str) {
        let (entry, value) = match state {
            MetricState::Generic(e) => {
                let text = e.serialized_entry.formatted.clone();
                (e, text)
            }
            MetricState::Numeric(e, v) => (e, short(v.current())),
        };
        let id = format!("{:?}", entry.metric_id);
        let name = self.names.get(&id).cloned().unwrap_or(id);
        let key = format!("{prefix}{name}");
        self.latest.insert(key.clone(), format!("{key} {value}"));
    }

    fn values(&self) -> String {
        self.latest.values().cloned().collect::<Vec<_>>().join("  ")
    }

    /// The plain line for `done` of `total` optimizer steps, if one is due.
    pub fn due_line(&mut self, done: usize, total: usize) -> Option<String> {
        let due = self.last_print.is_none_or(|t| t.elapsed() >= self.every) || done >= total;
        if self.quiet || !due {
            return None;
        }
        self.last_print = Some(Instant::now());
        let elapsed = self.start.elapsed();
        let eta = (done > 0 && total > done)
            .then(|| elapsed.mul_f64((total - done) as f64 / done as f64));
        Some(format!(
            "lavin-train: step {done}/{total}  {}  [{}{}]",
            self.values(),
            format_duration(elapsed),
            eta.map(|d| format!(" ETA {}", format_duration(d)))
                .unwrap_or_default()
        ))
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.remember(state, "");
    }

    fn update_valid(&mut self, state: MetricState) {
        self.remember(state, "val ");
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let (done, total) = (
            item.global_progress.items_processed,
            item.global_progress.items_total,
        );
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(self.values());
            if done >= total {
                b.finish();
            }
            return;
        }
        if let Some(line) = self.due_line(done, total) {
            eprintln!("{line}");
        }
    }

    fn render_valid(&mut self, _item: TrainingProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.remember(state, "test ");
    }

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(format!("{:?}", definition.metric_id), definition.name);
    }
}

#[cfg(all(feature = "tui", unix))]
pub use super::dashboard::Dashboard;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::Progress;
    use burn::train::metric::MetricEntry;
    use burn::train::metric::MetricId;

    fn meta() -> MetricMetadata {
        MetricMetadata {
            progress: Progress::new(1, 1),
            global_progress: Progress::new(1, 1),
            iteration: Some(1),
            lr: None,
        }
    }

    #[test]
    fn metrics_reach_the_plain_lines_first_every_and_last() {
        let mut r = LineRenderer::plain(Duration::from_secs(3600), false);
        let loss = StepMetric::new(StepValue::Loss);
        let id = MetricId::new(Arc::new("Loss".into()));
        r.register_metric(MetricDefinition::new(id.clone(), &loss));
        let mut m = StepMetric::new(StepValue::Loss);
        let item = StepOutput {
            loss: 1.25,
            ..StepOutput::default()
        };
        let entry = m.update(&item, &meta());
        r.update_train(MetricState::Numeric(MetricEntry::new(id, entry), m.value()));
        let first = r.due_line(1, 3).expect("the first step prints");
        assert!(
            first.contains("step 1/3") && first.contains("1.2500"),
            "{first}"
        );
        assert!(r.due_line(2, 3).is_none(), "not due within the interval");
        assert!(r
            .due_line(3, 3)
            .expect("the last step prints")
            .contains("step 3/3"));
        let mut quiet = LineRenderer::new(Duration::ZERO, true);
        assert!(
            quiet.due_line(1, 3).is_none(),
            "ranks other than 0 stay quiet"
        );
    }

    #[test]
    fn accuracy_weights_chunks_by_problems() {
        let mut a = AccuracyMetric::default();
        let meta = meta();
        a.update(
            &ValOutput {
                correct: 1,
                problems: 1,
            },
            &meta,
        );
        a.update(
            &ValOutput {
                correct: 0,
                problems: 3,
            },
            &meta,
        );
        assert!((a.running_value().current() - 25.0).abs() < 1e-9);
    }
}
