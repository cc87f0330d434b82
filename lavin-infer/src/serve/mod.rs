//! `lavin-infer serve`: a chat web page and an OpenAI-compatible JSON API.
//!
//! Routes:
//! - `GET /` — the page (one static HTML file, embedded): image upload, chat history, streamed
//!   replies, temperature / top-p / max-tokens controls.
//! - `POST /v1/chat/completions` — OpenAI chat-completions shape; `content` is a string or a
//!   list of `{"type":"text"}` / `{"type":"image_url","image_url":{"url":"data:image/png;base64,…"}}`
//!   parts (raw base64 accepted too); `"stream": true` answers with server-sent events of
//!   `chat.completion.chunk` objects and a final `data: [DONE]`.
//! - `GET /v1/models`, `GET /health`.
//!
//! One worker thread owns the model ([`worker`]); requests queue in a bounded channel. Bad input
//! (JSON, image, settings, a prompt too long) is a 400 with `{"error":{"message","type"}}`, a full
//! queue a 503, a model failure a 500; the server keeps serving after any of them.

pub mod api;
pub mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::chat::extract_reply;
use crate::generator::{Generator, SamplingParams};
use api::{ChatRequest, ErrorBody, ImageDecoder};
use worker::{Event, Job, SubmitError, WorkerHandle};

/// The page, embedded at build time.
pub const PAGE: &str = include_str!("page.html");

/// Server settings.
#[derive(Clone)]
pub struct ServeConfig {
    /// Largest request body in bytes (images travel inside it).
    pub max_body_bytes: usize,
    /// Longest prompt in characters, checked before queuing (the model checks tokens too).
    pub max_prompt_chars: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_new_tokens: usize,
    /// Requests that may wait for the model; more get 503.
    pub queue_capacity: usize,
    /// Settings for fields a request leaves out (the demo's 0.1 / 0.75).
    pub defaults: SamplingParams,
    /// Name reported as `model`.
    pub model_name: String,
    /// Turns an image URL (data URL or raw base64) into a model input.
    pub image_decoder: ImageDecoder,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_prompt_chars: 16 * 1024,
            max_new_tokens: 512,
            queue_capacity: 32,
            defaults: SamplingParams {
                max_gen_len: 256,
                ..SamplingParams::default()
            },
            model_name: "lavin".into(),
            image_decoder: Arc::new(|url: &str| {
                crate::images::image_from_data_url("upload", url).map_err(|e| e.to_string())
            }),
        }
    }
}

struct AppState {
    worker: WorkerHandle,
    cfg: ServeConfig,
    next_id: AtomicU64,
}

/// The application: routes over a fresh worker that owns `generator`.
pub fn router(generator: Box<dyn Generator>, cfg: ServeConfig) -> Router {
    let worker = worker::spawn_worker(generator, cfg.queue_capacity);
    let limit = cfg.max_body_bytes;
    let state = Arc::new(AppState {
        worker,
        cfg,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    generator: Box<dyn Generator>,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(generator, cfg))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `host:port` and serves until Ctrl-C (the CLI's entry point).
pub fn run_blocking(
    host: &str,
    port: u16,
    generator: Box<dyn Generator>,
    cfg: ServeConfig,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind((host, port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
        let addr: SocketAddr = listener.local_addr()?;
        eprintln!(
            "lavin-infer serving {} on http://{addr}/ (Ctrl-C stops)",
            generator.describe()
        );
        serve(listener, generator, cfg, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(kind, message))).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

async fn health(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "model": st.cfg.model_name,
        "generator": st.worker.description(),
        "pending": st.worker.pending(),
    }))
}

async fn models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model_name, "object": "model", "owned_by": "lavin"}],
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "request body is larger than the limit of {} bytes",
                    st.cfg.max_body_bytes
                )
            } else {
                rej.body_text()
            };
            return error(status, "invalid_request_error", msg);
        }
    };
    let req: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid JSON body: {e}")),
    };
    let params = match api::to_params(&req, &st.cfg.defaults, st.cfg.max_new_tokens) {
        Ok(p) => p,
        Err(e) => return bad_request(e.0),
    };
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| st.cfg.model_name.clone());
    let stream = req.stream;
    let decoder = st.cfg.image_decoder.clone();
    // Image decoding is CPU work: keep it off the async threads.
    let built = tokio::task::spawn_blocking(move || api::to_gen_request(&req, &decoder)).await;
    let request = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_request(e.0),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("request preparation failed: {e}"),
            )
        }
    };
    let chars = request.prompt.chars().count();
    if chars > st.cfg.max_prompt_chars {
        return bad_request(format!(
            "prompt is too long: {chars} characters, the limit is {}",
            st.cfg.max_prompt_chars
        ));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        request,
        params,
        events: tx,
    };
    if let Err(e) = st.worker.submit(job) {
        let status = match e {
            SubmitError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            SubmitError::Stopped => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return error(status, "server_busy", e.to_string());
    }
    // Wait for the first event so that a request the model rejects is still a plain 400.
    let Some(first) = rx.recv().await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the model worker dropped the request",
        );
    };
    if let Event::Failed {
        client_error,
        message,
    } = first
    {
        return if client_error {
            bad_request(message)
        } else {
            error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
        };
    }
    let id = format!("chatcmpl-{}", st.next_id.fetch_add(1, Ordering::SeqCst));
    let created = now();
    if stream {
        stream_response(id, created, model, first, rx)
    } else {
        collect_response(id, created, model, first, rx).await
    }
}

async fn collect_response(
    id: String,
    created: u64,
    model: String,
    first: Event,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let mut next = Some(first);
    loop {
        let ev = match next.take() {
            Some(e) => e,
            None => match rx.recv().await {
                Some(e) => e,
                None => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the model worker stopped mid-request",
                    )
                }
            },
        };
        match ev {
            Event::Delta(_) => {}
            Event::Done(out) => {
                let reply = extract_reply(&out.text);
                return Json(api::completion_body(&id, created, &model, &reply, &out))
                    .into_response();
            }
            Event::Failed {
                client_error,
                message,
            } => {
                let status = if client_error {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                return error(status, "server_error", message);
            }
        }
    }
}

fn stream_response(
    id: String,
    created: u64,
    model: String,
    first: Event,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let data = |v: serde_json::Value| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()));
    let events = async_stream::stream! {
        yield data(api::chunk_body(&id, created, &model, json!({"role": "assistant", "content": ""}), None));
        let mut next = Some(first);
        let mut started = false;
        loop {
            let ev = match next.take() {
                Some(e) => e,
                None => match rx.recv().await {
                    Some(e) => e,
                    None => {
                        yield data(json!({"error": {"message": "the model worker stopped mid-request", "type": "server_error"}}));
                        break;
                    }
                },
            };
            match ev {
                Event::Delta(d) => {
                    // The non-streamed reply is trimmed; drop the leading whitespace here too.
                    let d = if started { d.as_str() } else { d.trim_start() };
                    if d.is_empty() {
                        continue;
                    }
                    started = true;
                    yield data(api::chunk_body(&id, created, &model, json!({"content": d}), None));
                }
                Event::Done(out) => {
                    yield data(api::chunk_body(&id, created, &model, json!({}), Some(api::finish_str(out.finish))));
                    break;
                }
                Event::Failed { message, .. } => {
                    yield data(json!({"error": {"message": message, "type": "server_error"}}));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
