//! `lavin-infer serve`: a chat web page and an OpenAI-compatible JSON API.
//!
//! Routes:
//! - `GET /` — the page (one static HTML file, embedded): image upload, chat history, streamed
//!   replies, temperature / top-p / max-tokens controls, an optional API key field.
//! - `POST /v1/chat/completions` — OpenAI chat-completions shape; `content` is a string or a
//!   list of `{"type":"text"}` / `{"type":"image_url","image_url":{"url":"data:image/png;base64,…"}}`
//!   parts (raw base64 accepted too; local paths only under `--allowed-image-dir`);
//!   `"stream": true` answers with server-sent events of `chat.completion.chunk` objects and a
//!   final `data: [DONE]`.
//! - `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`.
//!
//! One worker thread owns the model and runs concurrent requests as batches ([`worker`]).
//! Errors are `{"error":{"message","type","param","code"}}`: bad input (JSON, a field, an image,
//! a prompt too long) a 400 naming the field, a missing API key a 401, a full queue a 503, a
//! model failure a 500; the server keeps serving after any of them. docs/serving.md describes
//! the fields honoured, ignored and refused.

pub mod api;
pub mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::generator::{FinishReason, Generator, ImageInput, SamplingParams};
use api::{ChatRequest, Choice, ErrorBody, ImageDecoder};
use worker::{BatchConfig, Event, Job, SubmitError, WorkerHandle};

/// The page, embedded at build time.
pub const PAGE: &str = include_str!("page.html");

/// Server settings.
#[derive(Clone)]
pub struct ServeConfig {
    /// Largest request body in bytes (images travel inside it).
    pub max_body_bytes: usize,
    /// Longest prompt in characters, checked before queuing (the model checks tokens too).
    pub max_prompt_chars: usize,
    /// Largest `max_tokens`; larger requests are clamped to it.
    pub max_new_tokens: usize,
    /// Requests that may wait for the model; more get 503.
    pub queue_capacity: usize,
    /// Rows (requests, or choices of `n` > 1) decoded together at most.
    pub max_batch: usize,
    /// How long the worker waits for more requests before starting a batch.
    pub batch_gather: Duration,
    /// Settings for fields a request leaves out (the demo's 0.1 / 0.75). Its seed is unused:
    /// a request without `seed` gets a fresh one.
    pub defaults: SamplingParams,
    /// Name reported as `model`.
    pub model_name: String,
    /// Turns an inline image (data URL or raw base64) into a model input.
    pub image_decoder: ImageDecoder,
    /// Local image paths (`file://` or plain) are read only inside this directory.
    pub allowed_image_dir: Option<PathBuf>,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// When set, CORS headers for this origin (`*` for any) and answers to preflights.
    pub cors_origin: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let batch = BatchConfig::default();
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_prompt_chars: 16 * 1024,
            max_new_tokens: 512,
            queue_capacity: batch.queue_capacity,
            max_batch: batch.max_batch,
            batch_gather: batch.gather,
            defaults: SamplingParams {
                max_gen_len: 256,
                ..SamplingParams::default()
            },
            model_name: "lavin".into(),
            image_decoder: Arc::new(|url: &str| {
                crate::images::image_from_data_url("upload", url).map_err(|e| e.to_string())
            }),
            allowed_image_dir: None,
            api_key: None,
            cors_origin: None,
        }
    }
}

/// `serve` flags for batching, access and local images (flattened into the CLI's serve args).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeFlags {
    /// Requests (or choices of `n`) decoded together at most.
    #[arg(long, alias = "max_batch", default_value_t = 8)]
    pub max_batch: usize,
    /// Milliseconds the model waits for more requests before starting a batch.
    #[arg(long, alias = "batch_wait_ms", default_value_t = 10)]
    pub batch_wait_ms: u64,
    /// Require `Authorization: Bearer KEY` on /v1/* (default: the LAVIN_API_KEY variable).
    #[arg(long, alias = "api_key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Send CORS headers for this origin (`*` for any) and answer preflight requests.
    #[arg(long, alias = "cors_origin", value_name = "ORIGIN")]
    pub cors_origin: Option<String>,
    /// Let requests name local images (`file://...` or a path) inside this directory.
    #[arg(long, alias = "allowed_image_dir", value_name = "DIR")]
    pub allowed_image_dir: Option<PathBuf>,
}

impl ServeFlags {
    /// `cfg` with these flags; checks them.
    pub fn apply(&self, cfg: ServeConfig) -> anyhow::Result<ServeConfig> {
        if self.max_batch == 0 {
            anyhow::bail!("--max-batch must be at least 1");
        }
        let api_key = self
            .api_key
            .clone()
            .or_else(|| std::env::var("LAVIN_API_KEY").ok())
            .filter(|k| !k.is_empty());
        let allowed_image_dir = match &self.allowed_image_dir {
            None => None,
            Some(d) => Some(
                d.canonicalize()
                    .map_err(|e| anyhow::anyhow!("--allowed-image-dir {}: {e}", d.display()))?,
            ),
        };
        if let Some(o) = &self.cors_origin {
            HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("--cors-origin {o:?} is not a valid header value"))?;
        }
        Ok(ServeConfig {
            max_batch: self.max_batch,
            batch_gather: Duration::from_millis(self.batch_wait_ms),
            api_key,
            cors_origin: self.cors_origin.clone(),
            allowed_image_dir,
            ..cfg
        })
    }
}

struct AppState {
    worker: WorkerHandle,
    cfg: ServeConfig,
    decoder: ImageDecoder,
    next_id: AtomicU64,
}

/// Whether an image URL names a local file rather than inline data: `file://`, or text that
/// cannot be base64 (base64 has no `.`, `_`, `-`, `~` ...), without a URL scheme.
fn is_local_path(url: &str) -> bool {
    url.starts_with("file://")
        || (!url.starts_with("data:")
            && !url.contains("://")
            && url
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "+/=\r\n ".contains(c))))
}

/// Reads a local image, only from inside `dir` (after resolving links and `..`).
fn local_image(url: &str, dir: Option<&Path>) -> Result<ImageInput, String> {
    let raw = url.strip_prefix("file://").unwrap_or(url);
    let Some(dir) = dir else {
        return Err(format!(
            "{raw:?} looks like a local path; the server reads local images only when started \
             with --allowed-image-dir (send the image as a data URL or base64 instead)"
        ));
    };
    let path = Path::new(raw)
        .canonicalize()
        .map_err(|e| format!("cannot open image path {raw:?}: {e}"))?;
    if !path.starts_with(dir) {
        return Err(format!(
            "image path {raw:?} is outside the allowed image directory {}",
            dir.display()
        ));
    }
    crate::images::load_image_file(&path).map_err(|e| e.to_string())
}

/// The application: routes over a fresh worker that owns `generator`.
pub fn router(generator: Box<dyn Generator>, cfg: ServeConfig) -> Router {
    let worker = worker::spawn_worker(
        generator,
        BatchConfig {
            max_batch: cfg.max_batch,
            gather: cfg.batch_gather,
            queue_capacity: cfg.queue_capacity,
        },
    );
    let limit = cfg.max_body_bytes;
    // Canonical once, so that a path check compares like with like.
    let dir = cfg
        .allowed_image_dir
        .as_ref()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()));
    let inline = cfg.image_decoder.clone();
    let decoder: ImageDecoder = Arc::new(move |url: &str| {
        if is_local_path(url) {
            local_image(url, dir.as_deref())
        } else {
            inline(url)
        }
    });
    let state = Arc::new(AppState {
        worker,
        cfg,
        decoder,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_by_id))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
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

fn bad_request(e: api::BadRequest) -> Response {
    let body = ErrorBody::new("invalid_request_error", e.message).param(e.param);
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn server_error(message: impl Into<String>) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// `/v1/*` needs the key when one is set; the page and `/health` stay open (the page asks for
/// the key and sends it).
async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = st.cfg.api_key.as_deref() else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/v1/") || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same_secret(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        Some(_) => key_error("incorrect API key provided"),
        None => key_error("missing API key: send the header `Authorization: Bearer <key>`"),
    }
}

fn key_error(message: &str) -> Response {
    let body = ErrorBody::new("invalid_request_error", message).code("invalid_api_key");
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Compares without stopping at the first difference (the time taken says nothing about the key).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// CORS for `--cors-origin`: preflights answered here (before the key check: browsers send
/// them without credentials), the allow-origin header on every response.
async fn cors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(origin) = st.cfg.cors_origin.as_deref() else {
        return next.run(req).await;
    };
    let Ok(origin) = HeaderValue::from_str(origin) else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if origin != "*" {
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn not_found(req: Request) -> Response {
    let body = ErrorBody::new(
        "invalid_request_error",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
    .code("not_found");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let w = &st.worker;
    Json(json!({
        "status": "ok",
        "model": st.cfg.model_name,
        "generator": w.description(),
        "pending": w.pending(),
        "running": w.running(),
        "queued": w.pending().saturating_sub(w.running()),
        "max_batch": w.config().max_batch,
        "batches": w.waves(),
        "largest_batch": w.largest_wave(),
        "api_key_required": st.cfg.api_key.is_some(),
    }))
}

fn model_object(name: &str) -> serde_json::Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "lavin"})
}

async fn models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_object(&st.cfg.model_name)]}))
}

async fn model_by_id(State(st): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    if id == st.cfg.model_name {
        return Json(model_object(&id)).into_response();
    }
    let body = ErrorBody::new(
        "invalid_request_error",
        format!(
            "the model {id:?} does not exist; this server serves {:?}",
            st.cfg.model_name
        ),
    )
    .param(Some("model".into()))
    .code("model_not_found");
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn failed(client_error: bool, message: String) -> Response {
    if client_error {
        bad_request(api::BadRequest {
            message,
            param: Some("messages".into()),
        })
    } else {
        server_error(message)
    }
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
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(api::BadRequest {
                message: format!("invalid JSON body: {e}"),
                param: None,
            })
        }
    };
    let req = match ChatRequest::from_json(value) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let params = match api::to_params(
        &req,
        &st.cfg.defaults,
        st.cfg.max_new_tokens,
        st.cfg.max_batch,
        rand::random(),
    ) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| st.cfg.model_name.clone());
    let (stream, include_usage, stop) = (req.stream, req.include_usage, req.stop.clone());
    let decoder = st.decoder.clone();
    // Image decoding is CPU work: keep it off the async threads.
    let built = tokio::task::spawn_blocking(move || api::to_gen_request(&req, &decoder)).await;
    let request = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_request(e),
        Err(e) => return server_error(format!("request preparation failed: {e}")),
    };
    let chars = request.prompt.chars().count();
    if chars > st.cfg.max_prompt_chars {
        return bad_request(api::BadRequest {
            message: format!(
                "prompt is too long: {chars} characters, the limit is {}",
                st.cfg.max_prompt_chars
            ),
            param: Some("messages".into()),
        });
    }
    let n = params.len();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        request,
        params,
        stop,
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
        return server_error("the model worker dropped the request");
    };
    if let Event::Failed {
        client_error,
        message,
    } = first
    {
        return failed(client_error, message);
    }
    let reply = Reply {
        id: format!("chatcmpl-{}", st.next_id.fetch_add(1, Ordering::SeqCst)),
        created: now(),
        model,
        n,
    };
    if stream {
        stream_response(reply, include_usage, first, rx)
    } else {
        collect_response(reply, first, rx).await
    }
}

/// What every response of one request repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    n: usize,
}

async fn collect_response(
    reply: Reply,
    first: Event,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let mut texts = vec![String::new(); reply.n];
    let mut finished: Vec<Option<(FinishReason, usize)>> = vec![None; reply.n];
    let mut prompt_tokens = 0;
    let mut next = Some(first);
    while finished.iter().any(Option::is_none) {
        let ev = match next.take() {
            Some(e) => e,
            None => match rx.recv().await {
                Some(e) => e,
                None => return server_error("the model worker stopped mid-request"),
            },
        };
        match ev {
            Event::Delta { choice, text } => texts[choice].push_str(&text),
            Event::Done {
                choice,
                output,
                finish,
            } => {
                prompt_tokens = output.prompt_tokens;
                finished[choice] = Some((finish, output.token_ids.len()));
            }
            Event::Failed {
                client_error,
                message,
            } => return failed(client_error, message),
        }
    }
    let choices: Vec<Choice> = texts
        .into_iter()
        .zip(finished)
        .map(|(text, f)| {
            let (finish, tokens) = f.expect("every choice finished");
            Choice {
                text: text.trim().to_string(),
                finish,
                tokens,
            }
        })
        .collect();
    Json(api::completion_body(
        &reply.id,
        reply.created,
        &reply.model,
        prompt_tokens,
        &choices,
    ))
    .into_response()
}

fn stream_response(
    reply: Reply,
    include_usage: bool,
    first: Event,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Response {
    let data = |v: serde_json::Value| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()));
    let events = async_stream::stream! {
        let Reply { id, created, model, n } = reply;
        let chunk = |index, delta, finish| api::chunk_body(&id, created, &model, index, delta, finish);
        for index in 0..n {
            yield data(chunk(index, json!({"role": "assistant", "content": ""}), None));
        }
        let mut next = Some(first);
        let mut started = vec![false; n];
        let (mut live, mut prompt_tokens, mut completion_tokens) = (n, 0, 0);
        while live > 0 {
            let ev = match next.take() {
                Some(e) => e,
                None => match rx.recv().await {
                    Some(e) => e,
                    None => {
                        yield data(json!({"error": {"message": "the model worker stopped mid-request", "type": "server_error", "param": null, "code": null}}));
                        break;
                    }
                },
            };
            match ev {
                Event::Delta { choice, text } => {
                    // The non-streamed reply is trimmed; drop the leading whitespace here too.
                    let d = if started[choice] { text.as_str() } else { text.trim_start() };
                    if d.is_empty() {
                        continue;
                    }
                    started[choice] = true;
                    yield data(chunk(choice, json!({"content": d}), None));
                }
                Event::Done { choice, output, finish } => {
                    live -= 1;
                    prompt_tokens = output.prompt_tokens;
                    completion_tokens += output.token_ids.len();
                    yield data(chunk(choice, json!({}), Some(api::finish_str(finish))));
                }
                Event::Failed { message, client_error } => {
                    let kind = if client_error { "invalid_request_error" } else { "server_error" };
                    yield data(json!({"error": {"message": message, "type": kind, "param": null, "code": null}}));
                    break;
                }
            }
        }
        if include_usage && live == 0 {
            // As OpenAI: a last chunk with no choices and the usage of the whole request.
            yield data(json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": api::usage(prompt_tokens, completion_tokens),
            }));
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
