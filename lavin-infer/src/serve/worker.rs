//! The one thread that owns the model. Requests reach it through a bounded channel and are
//! served one at a time, so concurrent HTTP requests queue instead of competing for the model.
//! A panic inside the generator is caught and reported as an error for that request; the worker
//! keeps serving.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::generator::{GenError, GenOutput, GenRequest, Generator, SamplingParams};

/// What the worker reports for one job.
#[derive(Debug)]
pub enum Event {
    /// A piece of generated text.
    Delta(String),
    /// Generation finished.
    Done(GenOutput),
    /// Generation failed; `client_error` = the request's fault (400), otherwise ours (500).
    Failed {
        /// 400 rather than 500.
        client_error: bool,
        /// Message for the client.
        message: String,
    },
}

/// One generation job.
pub struct Job {
    /// The request (one conversation).
    pub request: GenRequest,
    /// Its decoding settings.
    pub params: SamplingParams,
    /// Where events go; a closed receiver (client gone) is ignored.
    pub events: mpsc::UnboundedSender<Event>,
}

/// Handle to the worker: submit jobs, see the queue length.
#[derive(Clone)]
pub struct WorkerHandle {
    jobs: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
    description: Arc<String>,
}

/// Submitting failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    #[error("the server is busy ({0} requests queued); try again later")]
    Busy(usize),
    /// The worker has stopped.
    #[error("the model worker has stopped")]
    Stopped,
}

impl WorkerHandle {
    /// Queues a job.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let queued = self.pending.fetch_sub(1, Ordering::SeqCst) - 1;
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => SubmitError::Busy(queued),
                    mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The generator's description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Starts the worker thread; it lives until every handle is dropped.
pub fn spawn_worker(mut generator: Box<dyn Generator>, queue_capacity: usize) -> WorkerHandle {
    let (tx, mut rx) = mpsc::channel::<Job>(queue_capacity.max(1));
    let pending = Arc::new(AtomicUsize::new(0));
    let description = Arc::new(generator.describe());
    let counter = pending.clone();
    std::thread::Builder::new()
        .name("lavin-model-worker".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                let generator = generator.as_mut();
                lavin_backends::on_worker_thread(|| run_job(generator, job));
                counter.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .expect("spawning the model worker thread");
    WorkerHandle {
        jobs: tx,
        pending,
        description,
    }
}

fn run_job(generator: &mut dyn Generator, job: Job) {
    let Job {
        request,
        params,
        events,
    } = job;
    if events.is_closed() {
        return; // the client left while queued
    }
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        generator.generate(std::slice::from_ref(&request), &params, &mut |_, delta| {
            let _ = events.send(Event::Delta(delta.to_string()));
        })
    }));
    let event = match result {
        Ok(Ok(mut outputs)) if !outputs.is_empty() => Event::Done(outputs.swap_remove(0)),
        Ok(Ok(_)) => Event::Failed {
            client_error: false,
            message: "the generator returned no output".into(),
        },
        Ok(Err(e)) => Event::Failed {
            client_error: matches!(
                e,
                GenError::PromptTooLong { .. } | GenError::InvalidRequest(_)
            ),
            message: e.to_string(),
        },
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Event::Failed {
                client_error: false,
                message: format!("internal error in the model: {what}"),
            }
        }
    };
    let _ = events.send(event);
}
