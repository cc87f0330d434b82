//! The one thread that owns the model, batching concurrent requests.
//!
//! Batching is static, per wave: the worker takes the first waiting job, gathers every job that
//! arrives until the queue has been quiet for `gather` (at most `max_batch` rows: a job asking
//! for `n` choices takes `n` rows), and runs them as one batch of the KV-cache generator. Jobs
//! arriving while a wave runs wait for the next wave. (Joining a running batch would need a KV
//! cache whose rows sit at different positions; the model's cache advances all rows together.)
//!
//! Inside a wave every row keeps its own settings and random stream, and rows end on their own:
//! at EOS, at their length, at a stop string, or when their client has gone (its event channel
//! closed). A job's slot is freed as soon as its last row ends. A panic inside the generator is
//! caught and reported as an error for the wave's jobs; the worker keeps serving.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tokio_mpsc;

use crate::generator::{
    BatchItem, BatchObserver, FinishReason, GenError, GenOutput, GenRequest, Generator,
    SamplingParams,
};

/// What the worker reports for one job.
#[derive(Debug)]
pub enum Event {
    /// A piece of generated text of choice `choice`.
    Delta {
        /// Index of the choice (`n` > 1).
        choice: usize,
        /// The text.
        text: String,
    },
    /// Choice `choice` finished.
    Done {
        /// Index of the choice.
        choice: usize,
        /// Its output.
        output: GenOutput,
        /// `Stop` also when a stop string ended it.
        finish: FinishReason,
    },
    /// Generation failed; `client_error` = the request's fault (400), otherwise ours (500).
    Failed {
        /// 400 rather than 500.
        client_error: bool,
        /// Message for the client.
        message: String,
    },
}

/// One generation job: one conversation, `params.len()` choices.
pub struct Job {
    /// The request (one conversation).
    pub request: GenRequest,
    /// Decoding settings of each choice (their seeds differ).
    pub params: Vec<SamplingParams>,
    /// Stop strings: a choice ends at the first one, which is not sent.
    pub stop: Vec<String>,
    /// Where events go; a closed receiver (client gone) cancels the job.
    pub events: tokio_mpsc::UnboundedSender<Event>,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Rows per wave at most.
    pub max_batch: usize,
    /// A wave starts once no new job has arrived for this long (after the first).
    pub gather: Duration,
    /// Jobs that may wait; more are refused.
    pub queue_capacity: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            gather: Duration::from_millis(10),
            queue_capacity: 32,
        }
    }
}

/// Counters shown by `/health`.
#[derive(Default)]
struct Counters {
    /// Jobs submitted and not yet finished (queued or running).
    pending: AtomicUsize,
    /// Jobs in the running wave that have not finished.
    running: AtomicUsize,
    /// Waves run so far.
    waves: AtomicUsize,
    /// Rows of the largest wave so far.
    largest_wave: AtomicUsize,
}

/// Handle to the worker: submit jobs, read its counters.
#[derive(Clone)]
pub struct WorkerHandle {
    jobs: mpsc::SyncSender<Job>,
    counters: Arc<Counters>,
    description: Arc<String>,
    config: BatchConfig,
}

/// Submitting failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    #[error("the server is busy ({0} requests queued or running); try again later")]
    Busy(usize),
    /// The worker has stopped.
    #[error("the model worker has stopped")]
    Stopped,
}

impl WorkerHandle {
    /// Queues a job.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let c = &self.counters;
        c.pending.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let queued = c.pending.fetch_sub(1, Ordering::SeqCst) - 1;
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Busy(queued),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.counters.pending.load(Ordering::SeqCst)
    }

    /// Jobs of the running wave that are still generating.
    pub fn running(&self) -> usize {
        self.counters.running.load(Ordering::SeqCst)
    }

    /// Waves run so far.
    pub fn waves(&self) -> usize {
        self.counters.waves.load(Ordering::SeqCst)
    }

    /// Rows of the largest wave so far.
    pub fn largest_wave(&self) -> usize {
        self.counters.largest_wave.load(Ordering::SeqCst)
    }

    /// The batching settings.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// The generator's description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Starts the worker thread; it lives until every handle is dropped.
pub fn spawn_worker(mut generator: Box<dyn Generator>, config: BatchConfig) -> WorkerHandle {
    let config = BatchConfig {
        max_batch: config.max_batch.max(1),
        ..config
    };
    let (tx, rx) = mpsc::sync_channel::<Job>(config.queue_capacity.max(1));
    let counters = Arc::new(Counters::default());
    let description = Arc::new(generator.describe());
    let shared = counters.clone();
    std::thread::Builder::new()
        .name("lavin-model-worker".into())
        .spawn(move || {
            let mut carry = None;
            while let Some(wave) = next_wave(&rx, &mut carry, &config, &shared) {
                let generator = generator.as_mut();
                lavin_backends::on_worker_thread(|| run_wave(generator, wave, &shared));
            }
        })
        .expect("spawning the model worker thread");
    WorkerHandle {
        jobs: tx,
        counters,
        description,
        config,
    }
}

/// Blocks for the next job, then gathers more until the queue is quiet or the wave is full.
/// A job that would overflow the wave is carried to the next one. Jobs whose client has
/// already gone are dropped here. `None` when every handle is gone.
fn next_wave(
    rx: &mpsc::Receiver<Job>,
    carry: &mut Option<Job>,
    config: &BatchConfig,
    counters: &Counters,
) -> Option<Vec<Job>> {
    let mut wave: Vec<Job> = Vec::new();
    let mut rows = 0;
    let take = |job: Job, wave: &mut Vec<Job>, rows: &mut usize| {
        if job.events.is_closed() {
            counters.pending.fetch_sub(1, Ordering::SeqCst);
        } else {
            *rows += job.params.len();
            wave.push(job);
        }
    };
    if let Some(job) = carry.take() {
        take(job, &mut wave, &mut rows);
    }
    while wave.is_empty() {
        take(rx.recv().ok()?, &mut wave, &mut rows);
    }
    let mut last_arrival = Instant::now();
    while rows < config.max_batch {
        let wait = config.gather.saturating_sub(last_arrival.elapsed());
        let job = match rx.recv_timeout(wait) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => break,
            // Serve what was gathered; the next call ends the loop.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        last_arrival = Instant::now();
        if rows + job.params.len() > config.max_batch {
            *carry = Some(job);
            break;
        }
        take(job, &mut wave, &mut rows);
    }
    Some(wave)
}

/// Row `row` of a wave: which job and choice it serves, and its stop-string state.
struct Row {
    job: usize,
    choice: usize,
    text: String,
    sent: usize,
    hit_stop: bool,
}

/// Routes the generator's per-row callbacks to the jobs' event channels.
struct Dispatch<'a> {
    jobs: &'a [Job],
    rows: Vec<Row>,
    /// Rows of each job still running.
    live: Vec<usize>,
    /// Jobs already failed (one message per job, even with `n` > 1).
    failed: Vec<bool>,
    counters: &'a Counters,
}

impl Dispatch<'_> {
    fn send(&self, job: usize, event: Event) {
        // A closed channel only means the client left; cancellation picks that up.
        let _ = self.jobs[job].events.send(event);
    }

    /// Sends the text of `row` that can no longer turn into a stop string.
    fn flush(&mut self, row: usize, everything: bool) {
        let r = &self.rows[row];
        let upto = if everything {
            r.text.len()
        } else {
            safe_prefix(&r.text, &self.jobs[r.job].stop)
        };
        if upto > r.sent {
            let text = r.text[r.sent..upto].to_string();
            let (job, choice) = (r.job, r.choice);
            self.rows[row].sent = upto;
            self.send(job, Event::Delta { choice, text });
        }
    }

    fn row_ended(&mut self, job: usize) {
        self.live[job] -= 1;
        if self.live[job] == 0 {
            self.counters.running.fetch_sub(1, Ordering::SeqCst);
            self.counters.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn fail(&mut self, job: usize, error: &GenError) {
        if !std::mem::replace(&mut self.failed[job], true) {
            let client_error = matches!(
                error,
                GenError::PromptTooLong { .. } | GenError::InvalidRequest(_)
            );
            let message = match error {
                // The generator numbers rows of the wave; the client sent one request.
                GenError::PromptTooLong { tokens, max, .. } => format!(
                    "the prompt is too long: {tokens} tokens, the model's context allows at most {max}"
                ),
                e => e.to_string(),
            };
            self.send(
                job,
                Event::Failed {
                    client_error,
                    message,
                },
            );
        }
    }
}

impl BatchObserver for Dispatch<'_> {
    fn token(&mut self, row: usize, delta: &str) -> bool {
        let r = &mut self.rows[row];
        r.text.push_str(delta);
        let stops = &self.jobs[r.job].stop;
        // Search only where a new match can start: the held-back tail plus the new text.
        let from = r.text.len() - delta.len();
        let from = from.saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
        let from = (0..=from)
            .rev()
            .find(|&i| r.text.is_char_boundary(i))
            .unwrap_or(0);
        let hit = stops
            .iter()
            .filter_map(|s| r.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(at) = hit {
            r.text.truncate(at);
            r.hit_stop = true;
            self.flush(row, true);
            return false;
        }
        self.flush(row, false);
        true
    }

    fn cancelled(&mut self, row: usize) -> bool {
        self.jobs[self.rows[row].job].events.is_closed()
    }

    fn finished(&mut self, row: usize, result: Result<GenOutput, GenError>) {
        let job = self.rows[row].job;
        match result {
            Ok(output) => {
                self.flush(row, true);
                let r = &self.rows[row];
                let finish = if r.hit_stop {
                    FinishReason::Stop
                } else {
                    output.finish
                };
                let choice = r.choice;
                if !self.failed[job] {
                    self.send(
                        job,
                        Event::Done {
                            choice,
                            output,
                            finish,
                        },
                    );
                }
            }
            Err(e) => self.fail(job, &e),
        }
        self.row_ended(job);
    }
}

/// How many bytes of `text` can be sent: all but the longest tail that is the start of a stop
/// string (it may still complete into one).
fn safe_prefix(text: &str, stops: &[String]) -> usize {
    let mut keep = text.len();
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            // `s[..i]` is a proper prefix of the stop string.
            if text.ends_with(&s[..i]) {
                keep = keep.min(text.len() - i);
            }
        }
    }
    keep
}

fn run_wave(generator: &mut dyn Generator, jobs: Vec<Job>, counters: &Counters) {
    let mut items = Vec::new();
    let mut rows = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        for (c, params) in job.params.iter().enumerate() {
            items.push(BatchItem {
                request: job.request.clone(),
                params: params.clone(),
            });
            rows.push(Row {
                job: j,
                choice: c,
                text: String::new(),
                sent: 0,
                hit_stop: false,
            });
        }
    }
    counters.waves.fetch_add(1, Ordering::SeqCst);
    counters
        .largest_wave
        .fetch_max(items.len(), Ordering::SeqCst);
    counters.running.fetch_add(jobs.len(), Ordering::SeqCst);
    let mut dispatch = Dispatch {
        live: jobs.iter().map(|j| j.params.len()).collect(),
        failed: vec![false; jobs.len()],
        jobs: &jobs,
        rows,
        counters,
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        generator.generate_batch(&items, &mut dispatch)
    }));
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Some(GenError::Model(anyhow::anyhow!(
                "internal error in the model: {what}"
            )))
        }
    };
    // Rows the generator did not finish (a failure, or a generator that forgot one).
    let error = error.unwrap_or_else(|| {
        GenError::Model(anyhow::anyhow!("the generator did not finish the request"))
    });
    for job in 0..jobs.len() {
        if dispatch.live[job] > 0 {
            dispatch.fail(job, &error);
            while dispatch.live[job] > 0 {
                dispatch.row_ended(job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_prefix;

    #[test]
    fn holds_back_a_possible_stop_start() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(safe_prefix("hello E", &stops), 6);
        assert_eq!(safe_prefix("hello EN", &stops), 6);
        assert_eq!(safe_prefix("hello\n", &stops), 5);
        assert_eq!(safe_prefix("hello", &stops), 5);
        assert_eq!(safe_prefix("héllo é", &["é!".to_string()]), "héllo ".len());
    }
}
