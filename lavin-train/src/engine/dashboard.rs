//! burn-train's terminal dashboard, kept to lavin-train's stopping rules.
//!
//! burn-train's dashboard puts the terminal in raw mode, where Ctrl-C is a key it ignores,
//! and its quit menu (`q`) offers "stop" (its interrupter) and "kill" (a panic in its thread
//! and then in the training's next call to it). Here:
//! - Ctrl-C is a signal again (the tty's `ISIG` back on, Ctrl-\ and Ctrl-Z disabled while
//!   the dashboard is up): [`crate::interrupt`]'s first Ctrl-C and second Ctrl-C.
//! - Both quit choices ask for the stop a first Ctrl-C asks for; the kill's panic is caught
//!   and not printed. So every way out of the dashboard ends with a checkpoint and exit 0.
//! - On any stop request the dashboard closes at once (the terminal is restored), so the
//!   rest of the run, a second Ctrl-C included, happens on the normal screen.
//! - While it is up, stderr goes to a buffer (lines on the alternate screen would scribble
//!   over the dashboard and vanish with it), printed when it closes. A panic prints
//!   straight away.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::data::dataloader::Progress;
use burn::train::metric::MetricDefinition;
use burn::train::renderer::tui::TuiMetricsRendererWrapper;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{Interrupter, LearnerSummary};

use super::metrics::{LineRenderer, LINE_EVERY};

/// The panic of burn-train's "kill" choice (`renderer/tui/renderer.rs`).
const KILL: &str = "Killing training from user input.";
/// Whether a dashboard is up in this process (the terminal, stderr and the panic hook are
/// the process's: one at a time).
static OPEN: AtomicBool = AtomicBool::new(false);
/// How often the watcher looks for a stop request.
const WATCH: Duration = Duration::from_millis(50);
/// The most stderr kept while the dashboard is up (the newest bytes are kept).
const KEEP: usize = 1 << 20;

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// burn-train's dashboard while the run goes on, then plain lines.
pub struct Dashboard {
    shared: Arc<Shared>,
    /// Fed all along; prints once the dashboard has closed on a stop request.
    lines: LineRenderer,
    watcher: Option<JoinHandle<()>>,
    steps: Steps,
}

/// The run reports its progress in optimizer steps (`global_progress`: step N of T, as the
/// plain lines show it); burn-train's dashboard reads that field as epochs (its status,
/// its progress bar and ETA). Rewritten for it: epoch of `epochs`, and the step.
struct Steps {
    epochs: usize,
    per_epoch: Option<usize>,
}

impl Steps {
    fn epoch(&self, step: usize) -> Option<Progress> {
        let per = self.per_epoch.filter(|&p| p > 0)?;
        let epoch = (step.max(1) - 1) / per + 1;
        Some(Progress::new(epoch.min(self.epochs), self.epochs))
    }

    fn train(
        &mut self,
        mut item: TrainingProgress,
        indicators: Vec<ProgressType>,
    ) -> (TrainingProgress, Vec<ProgressType>) {
        let steps = item.global_progress.clone();
        if self.epochs > 0 && steps.items_total >= self.epochs {
            self.per_epoch = Some(steps.items_total / self.epochs);
        }
        let Some(epoch) = self.epoch(steps.items_processed) else {
            return (item, indicators);
        };
        item.global_progress = epoch.clone();
        (item, relabel(indicators, &epoch, Some(&steps)))
    }

    fn valid(
        &self,
        mut item: TrainingProgress,
        indicators: Vec<ProgressType>,
    ) -> (TrainingProgress, Vec<ProgressType>) {
        let Some(epoch) = self.epoch(item.global_progress.items_processed) else {
            return (item, indicators);
        };
        item.global_progress = epoch.clone();
        (item, relabel(indicators, &epoch, None))
    }
}

/// The dashboard's indicators with the epoch in its "Epoch" one and, given `steps`, the
/// optimizer step where it shows the "Iteration".
fn relabel(
    indicators: Vec<ProgressType>,
    epoch: &Progress,
    steps: Option<&Progress>,
) -> Vec<ProgressType> {
    indicators
        .into_iter()
        .map(|p| match (p, steps) {
            (ProgressType::Detailed { tag, .. }, _) if tag == "Epoch" => ProgressType::Detailed {
                tag,
                progress: epoch.clone(),
            },
            (ProgressType::Value { tag, .. }, Some(steps)) if tag == "Iteration" => {
                ProgressType::Detailed {
                    tag: "Step".into(),
                    progress: steps.clone(),
                }
            }
            (p, _) => p,
        })
        .collect()
}

struct Shared {
    tui: Mutex<Option<TuiMetricsRendererWrapper>>,
    /// The dashboard's quit choice "stop".
    quit: Interrupter,
    /// Set by the panic hook when the dashboard's "kill" fired.
    killed: AtomicBool,
    closed: AtomicBool,
    capture: Mutex<Option<Capture>>,
    /// The panic hook before ours, put back when the dashboard closes.
    hook: Mutex<Option<Arc<Hook>>>,
}

impl Dashboard {
    /// Start the dashboard for a run of `epochs` (stdout and stderr are terminals); `None`
    /// if one is up already.
    pub fn open(epochs: usize) -> Option<Self> {
        if OPEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        // Ctrl-C reaches the run as a signal while the dashboard is up: it must be caught.
        crate::interrupt::install();
        let quit = Interrupter::new();
        let shared = Arc::new(Shared {
            tui: Mutex::new(None),
            quit: quit.clone(),
            killed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            capture: Mutex::new(None),
            hook: Mutex::new(None),
        });
        // Ours first: the dashboard's own hook (it restores the terminal) then calls ours.
        let previous: Arc<Hook> = Arc::new(std::panic::take_hook());
        *lock(&shared.hook) = Some(previous.clone());
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        std::panic::set_hook(Box::new(move |info| {
            let shared = weak.upgrade();
            if is_kill(info) {
                if let Some(s) = shared {
                    s.killed.store(true, Ordering::SeqCst);
                }
                return;
            }
            if let Some(s) = shared {
                // A panic is shown now, not when the dashboard closes (it may never).
                if let Ok(mut c) = s.capture.try_lock() {
                    if let Some(c) = c.take() {
                        c.end();
                    }
                }
            }
            previous(info);
        }));
        *lock(&shared.capture) = Capture::start();
        *lock(&shared.tui) = Some(TuiMetricsRendererWrapper::new(quit, None));
        ctrl_c_signals();
        #[cfg(target_os = "linux")]
        lowest_priority("train-renderer");
        let s = shared.clone();
        let watcher = std::thread::Builder::new()
            .name("lavin-dashboard".into())
            .spawn(move || {
                while !s.closed.load(Ordering::SeqCst) {
                    if s.killed.load(Ordering::SeqCst)
                        || s.quit.should_stop()
                        || crate::interrupt::requested()
                    {
                        s.close(true);
                        break;
                    }
                    std::thread::sleep(WATCH);
                }
            })
            .ok();
        Some(Self {
            shared,
            lines: LineRenderer::plain(LINE_EVERY, false),
            watcher,
            steps: Steps {
                epochs,
                per_epoch: None,
            },
        })
    }

    /// Run `f` on the dashboard if it is up; false if it is not (any more).
    fn show(&self, f: impl FnOnce(&mut TuiMetricsRendererWrapper)) -> bool {
        let mut tui = lock(&self.shared.tui);
        let Some(t) = tui.as_mut() else {
            return false;
        };
        if !self.shared.killed.load(Ordering::SeqCst)
            && catch_unwind(AssertUnwindSafe(|| f(t))).is_ok()
        {
            return true;
        }
        // The dashboard's kill: its panic reached this call.
        drop(tui);
        self.shared.close(true);
        false
    }

    fn is_open(&self) -> bool {
        !self.shared.closed.load(Ordering::SeqCst)
    }
}

impl Shared {
    /// Close the dashboard (once): terminal restored, panic hook and stderr put back, the
    /// held stderr printed; with `stopping`, ask for the stop a first Ctrl-C asks for.
    fn close(&self, stopping: bool) {
        let Some(tui) = lock(&self.tui).take() else {
            return;
        };
        // Leaves raw mode and the alternate screen (joins the dashboard's thread). After a
        // kill this drop may meet the kill signal and panic: caught, and not printed.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(tui)));
        if self.killed.load(Ordering::SeqCst) {
            // The kill's panic restored the terminal but for the cursor.
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x1b[?25h").and_then(|_| out.flush());
        }
        if !std::thread::panicking() {
            if let Some(previous) = lock(&self.hook).take() {
                let _ = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| previous(info)));
            }
        }
        if let Some(c) = lock(&self.capture).take() {
            c.end();
        }
        if stopping {
            crate::interrupt::request();
            eprintln!(
                "lavin-train: stopping after the current optimizer step, then a checkpoint \
                 (Ctrl-C again exits at once, without one)"
            );
        }
        self.closed.store(true, Ordering::SeqCst);
        OPEN.store(false, Ordering::SeqCst);
    }
}

fn is_kill(info: &PanicHookInfo<'_>) -> bool {
    let p = info.payload();
    p.downcast_ref::<&str>().is_some_and(|m| *m == KILL)
        || p.downcast_ref::<String>().is_some_and(|m| m == KILL)
}

fn copy(state: &MetricState) -> MetricState {
    match state {
        MetricState::Generic(e) => MetricState::Generic(e.clone()),
        MetricState::Numeric(e, v) => MetricState::Numeric(e.clone(), v.clone()),
    }
}

/// Once the dashboard has put the terminal in raw mode (its thread does, right after it
/// starts): signals from the keyboard again, Ctrl-C only. The dashboard's exit restores the
/// terminal's settings from before.
fn ctrl_c_signals() {
    let fd = if unsafe { libc::isatty(0) } == 1 {
        0
    } else {
        1
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        // SAFETY: `termios` is plain data, filled by `tcgetattr`.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return;
        }
        if t.c_lflag & libc::ISIG == 0 {
            t.c_lflag |= libc::ISIG;
            t.c_cc[libc::VQUIT] = 0;
            t.c_cc[libc::VSUSP] = 0;
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// burn-train's dashboard thread `name` polls without ever sleeping
/// (`renderer/tui/renderer.rs`): a core busy for the whole run, taken from a CPU backend's
/// workers. At idle priority it runs on what the training leaves (a CPU run on 2 cores:
/// about 20-90% slower with it at normal priority, about 7% at idle).
#[cfg(target_os = "linux")]
fn lowest_priority(name: &str) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let tid = task.file_name().to_string_lossy().parse::<libc::id_t>();
        if let (true, Ok(tid)) = (comm.trim_end() == name, tid) {
            // SAFETY: changes one thread's scheduling; errors are ignored.
            unsafe {
                let idle = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_IDLE, &idle);
                libc::setpriority(libc::PRIO_PROCESS, tid, 19);
            }
        }
    }
}

/// stderr into a pipe drained by a thread, until [`Capture::end`].
struct Capture {
    saved: libc::c_int,
    write: libc::c_int,
    stop: Arc<AtomicBool>,
    reader: JoinHandle<Vec<u8>>,
}

impl Capture {
    fn start() -> Option<Self> {
        let mut fds = [0; 2];
        // SAFETY: plain fd calls; every fd opened here is closed on every path.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return None;
            }
            let [read, write] = fds;
            libc::fcntl(read, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(write, libc::F_SETFD, libc::FD_CLOEXEC);
            let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            let reader = std::thread::Builder::new()
                .name("lavin-stderr".into())
                .spawn(move || drain(read, &st));
            match reader {
                Ok(reader) if saved >= 0 && libc::dup2(write, 2) >= 0 => Some(Self {
                    saved,
                    write,
                    stop,
                    reader,
                }),
                reader => {
                    stop.store(true, Ordering::SeqCst);
                    libc::close(write);
                    if let Ok(r) = reader {
                        let _ = r.join();
                    } else {
                        libc::close(read);
                    }
                    if saved >= 0 {
                        libc::close(saved);
                    }
                    None
                }
            }
        }
    }

    /// stderr back; what it held is printed.
    fn end(self) {
        // SAFETY: the fds are this capture's own.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
            libc::close(self.write);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(held) = self.reader.join() {
            let _ = std::io::stderr().write_all(&held);
        }
    }
}

/// Read `fd` until its writers are gone, or until `stop` and nothing more to read.
fn drain(fd: libc::c_int, stop: &AtomicBool) -> Vec<u8> {
    let mut held = Vec::new();
    let mut dropped = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; `buf` outlives the read.
        let n = unsafe { libc::poll(&mut p, 1, 50) };
        if n > 0 {
            let k = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if k > 0 {
                held.extend_from_slice(&buf[..k as usize]);
                if held.len() > KEEP {
                    let cut = held.len() - KEEP / 2;
                    dropped += cut;
                    held.drain(..cut);
                }
                continue;
            }
            if k == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        } else if n == 0 && stop.load(Ordering::SeqCst) {
            break;
        }
    }
    unsafe { libc::close(fd) };
    if dropped > 0 {
        let mut note =
            format!("lavin-train: ({dropped} earlier bytes of stderr not kept)\n").into_bytes();
        note.append(&mut held);
        held = note;
    }
    held
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.shared.close(false);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

impl MetricsRendererTraining for Dashboard {
    fn update_train(&mut self, state: MetricState) {
        self.lines.update_train(copy(&state));
        self.show(|t| t.update_train(state));
    }

    fn update_valid(&mut self, state: MetricState) {
        self.lines.update_valid(copy(&state));
        self.show(|t| t.update_valid(state));
    }

    fn render_train(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        if self.is_open() {
            let (item, indicators) = self.steps.train(item, indicators);
            self.show(|t| t.render_train(item, indicators));
        } else {
            self.lines.render_train(item, indicators);
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, indicators: Vec<ProgressType>) {
        let (item, indicators) = self.steps.valid(item, indicators);
        self.show(|t| t.render_valid(item, indicators));
    }

    fn on_train_end(
        &mut self,
        summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        // Before the run's last lines: they belong on the normal screen.
        self.shared.close(false);
        self.lines.on_train_end(summary)
    }
}

impl MetricsRendererEvaluation for Dashboard {
    fn update_test(&mut self, name: EvaluationName, state: MetricState) {
        self.lines.update_test(name.clone(), copy(&state));
        self.show(|t| t.update_test(name, state));
    }

    fn render_test(&mut self, item: EvaluationProgress, indicators: Vec<ProgressType>) {
        self.show(|t| t.render_test(item, indicators));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_become_epochs_for_the_dashboard() {
        // 3 epochs of 4 optimizer steps.
        let mut s = Steps {
            epochs: 3,
            per_epoch: None,
        };
        let item = |step| TrainingProgress {
            progress: Some(Progress::new(8, 16)),
            global_progress: Progress::new(step, 12),
            iteration: Some(step),
        };
        let mut shown = |step| {
            let indicators = vec![
                ProgressType::Detailed {
                    tag: "Epoch".into(),
                    progress: Progress::new(step, 12),
                },
                ProgressType::Value {
                    tag: "Iteration".into(),
                    value: step,
                },
            ];
            s.train(item(step), indicators)
        };
        for (step, epoch) in [(1, 1), (4, 1), (5, 2), (12, 3)] {
            let (item, indicators) = shown(step);
            let g = &item.global_progress;
            assert_eq!(
                (g.items_processed, g.items_total),
                (epoch, 3),
                "step {step}"
            );
            let tags: Vec<(String, usize, usize)> = indicators
                .iter()
                .map(|p| match p {
                    ProgressType::Detailed { tag, progress } => {
                        (tag.clone(), progress.items_processed, progress.items_total)
                    }
                    ProgressType::Value { tag, value } => (tag.clone(), *value, 0),
                })
                .collect();
            assert_eq!(
                tags,
                [("Epoch".into(), epoch, 3), ("Step".into(), step, 12)],
                "step {step}"
            );
        }
        // Validation after step 8: epoch 2.
        let (v, _) = s.valid(
            TrainingProgress {
                progress: Some(Progress::new(1, 2)),
                global_progress: Progress::new(8, 8),
                iteration: None,
            },
            vec![],
        );
        assert_eq!(v.global_progress.items_processed, 2);
    }
}

impl MetricsRenderer for Dashboard {
    fn manual_close(&mut self) {
        self.shared.close(false);
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.lines.register_metric(definition.clone());
        self.show(|t| t.register_metric(definition));
    }
}
