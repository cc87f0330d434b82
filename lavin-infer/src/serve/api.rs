//! The OpenAI chat-completions request and response shapes, and their mapping onto a LaVIN
//! conversation.
//!
//! Mapping: `system` messages are ignored (the original's conversation has no system text);
//! `user` → `Instruction`, `assistant` → `Responese`. An image part (data URL or raw base64) in a
//! user message attaches the conversation's one image at that point, as the demo's upload does;
//! a second image is an error naming the limit. The last message must come from the user.
//!
//! Every body field is honoured, accepted and ignored ([`IGNORED_FIELDS`]) or refused with a
//! 400 naming it (`param`); docs/serving.md has the table.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::chat::Conversation;
use crate::generator::{FinishReason, GenRequest, ImageInput, SamplingParams};

/// Decodes one image given as a data URL, raw base64 or (when the server allows it) a local
/// path.
pub type ImageDecoder = std::sync::Arc<dyn Fn(&str) -> Result<ImageInput, String> + Send + Sync>;

/// The most stop strings a request may give (as OpenAI).
pub const MAX_STOP: usize = 4;

/// Fields accepted and ignored (they change nothing LaVIN does); docs/serving.md lists them.
pub const IGNORED_FIELDS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
];

/// Fields refused whatever their value: the model cannot do what they ask.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    ("tools", "tool calling is not supported"),
    ("tool_choice", "tool calling is not supported"),
    ("functions", "function calling is not supported"),
    ("function_call", "function calling is not supported"),
    ("audio", "audio output is not supported"),
    ("prediction", "predicted outputs are not supported"),
    ("web_search_options", "web search is not supported"),
    ("reasoning_effort", "this is not a reasoning model"),
];

/// `POST /v1/chat/completions` body, checked field by field.
#[derive(Debug)]
pub struct ChatRequest {
    /// Model name (echoed back).
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    pub top_p: Option<f32>,
    /// Top-k (extension).
    pub top_k: Option<usize>,
    /// New tokens at most (`max_completion_tokens` wins when both are given).
    pub max_tokens: Option<usize>,
    /// Sampler seed; without one each request draws a fresh seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Choices to generate.
    pub n: usize,
    /// Server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text, or a list of parts.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<Value>),
}

/// A request the API cannot take; becomes a 400 naming the field (`param`) when there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct BadRequest {
    /// What is wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<String>,
}

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest {
        message: msg.into(),
        param: None,
    }
}

fn bad_field(field: &str, msg: impl std::fmt::Display) -> BadRequest {
    BadRequest {
        message: format!("{field}: {msg}"),
        param: Some(field.to_string()),
    }
}

/// Field `name` of `body` as a `T`; `null` counts as absent.
fn field<T: serde::de::DeserializeOwned>(
    body: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, BadRequest> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| bad_field(name, e)),
    }
}

impl ChatRequest {
    /// Checks a JSON body: every field is honoured, listed as ignored, or refused by name.
    pub fn from_json(body: Value) -> Result<Self, BadRequest> {
        let Value::Object(body) = body else {
            return Err(bad("the request body must be a JSON object"));
        };
        let messages: Vec<ChatMessage> =
            field(&body, "messages")?.ok_or_else(|| bad_field("messages", "is required"))?;
        for (name, why) in REFUSED_FIELDS {
            if body.get(*name).is_some_and(|v| !v.is_null()) {
                return Err(bad_field(name, why));
            }
        }
        if field::<bool>(&body, "logprobs")?.unwrap_or(false) {
            return Err(bad_field("logprobs", "log probabilities are not supported"));
        }
        if body.get("top_logprobs").is_some_and(|v| !v.is_null()) {
            return Err(bad_field(
                "top_logprobs",
                "log probabilities are not supported",
            ));
        }
        if let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) {
            let kind = rf.get("type").and_then(Value::as_str);
            if kind != Some("text") {
                return Err(bad_field(
                    "response_format",
                    "only {\"type\": \"text\"} is supported (no JSON mode or schemas)",
                ));
            }
        }
        for name in ["presence_penalty", "frequency_penalty"] {
            if field::<f32>(&body, name)?.is_some_and(|p| p != 0.0) {
                return Err(bad_field(name, "penalties are not supported (only 0)"));
            }
        }
        if field::<Map<String, Value>>(&body, "logit_bias")?.is_some_and(|m| !m.is_empty()) {
            return Err(bad_field("logit_bias", "logit bias is not supported"));
        }
        if let Some(m) = field::<Vec<String>>(&body, "modalities")? {
            if m.iter().any(|x| x != "text") {
                return Err(bad_field("modalities", "only \"text\" output is supported"));
            }
        }
        const HANDLED: &[&str] = &[
            "model",
            "messages",
            "temperature",
            "top_p",
            "top_k",
            "max_tokens",
            "max_completion_tokens",
            "seed",
            "stop",
            "n",
            "stream",
            "stream_options",
            "logprobs",
            "top_logprobs",
            "response_format",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "modalities",
        ];
        if let Some(unknown) = body
            .keys()
            .find(|k| !HANDLED.contains(&k.as_str()) && !IGNORED_FIELDS.contains(&k.as_str()))
        {
            return Err(bad_field(unknown, "unknown field"));
        }
        let stop = match body.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
                .map_err(|_| bad_field("stop", "must be a string or a list of strings"))?,
        };
        if stop.len() > MAX_STOP {
            return Err(bad_field(
                "stop",
                format!("at most {MAX_STOP} stop strings, got {}", stop.len()),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(bad_field("stop", "stop strings must not be empty"));
        }
        let stream = field::<bool>(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options").filter(|v| !v.is_null()) {
            None => false,
            Some(_) => {
                if !stream {
                    return Err(bad_field(
                        "stream_options",
                        "is only allowed with \"stream\": true",
                    ));
                }
                let opts: Map<String, Value> = field(&body, "stream_options")?.unwrap_or_default();
                if let Some(k) = opts.keys().find(|k| k.as_str() != "include_usage") {
                    return Err(bad_field("stream_options", format!("unknown option {k:?}")));
                }
                opts.get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            }
        };
        let max_tokens = field::<usize>(&body, "max_completion_tokens")?
            .or(field::<usize>(&body, "max_tokens")?);
        Ok(Self {
            model: field(&body, "model")?,
            messages,
            temperature: field(&body, "temperature")?,
            top_p: field(&body, "top_p")?,
            top_k: field(&body, "top_k")?,
            max_tokens,
            seed: field(&body, "seed")?,
            stop,
            n: field(&body, "n")?.unwrap_or(1),
            stream,
            include_usage,
        })
    }
}

/// Parsed parts of one message: its text and its image URLs.
fn split_content(i: usize, content: &Option<Content>) -> Result<(String, Vec<String>), BadRequest> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(Content::Text(t)) => Ok((t.clone(), Vec::new())),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" => texts.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("messages[{i}].content[{j}].text must be a string")))?
                            .to_string(),
                    ),
                    "image_url" => {
                        let url = match part.get("image_url") {
                            Some(Value::String(s)) => s.clone(),
                            Some(obj) => obj
                                .get("url")
                                .and_then(Value::as_str)
                                .ok_or_else(|| bad(format!("messages[{i}].content[{j}].image_url.url must be a string")))?
                                .to_string(),
                            None => return Err(bad(format!("messages[{i}].content[{j}] has no image_url"))),
                        };
                        images.push(url);
                    }
                    other => {
                        return Err(bad(format!(
                            "messages[{i}].content[{j}].type {other:?} is not supported (use \"text\" or \"image_url\")"
                        )))
                    }
                }
            }
            Ok((texts.join("\n"), images))
        }
    }
}

/// Builds the generation request of a chat-completions body.
pub fn to_gen_request(
    req: &ChatRequest,
    decode_image: &ImageDecoder,
) -> Result<GenRequest, BadRequest> {
    build_conversation(req, decode_image).map_err(|mut e| {
        e.param.get_or_insert_with(|| "messages".into());
        e
    })
}

fn build_conversation(
    req: &ChatRequest,
    decode_image: &ImageDecoder,
) -> Result<GenRequest, BadRequest> {
    if req.messages.is_empty() {
        return Err(bad("messages must not be empty"));
    }
    let mut conv = Conversation::new();
    let mut last_role = "";
    let mut image_at = None;
    for (i, m) in req.messages.iter().enumerate() {
        let (text, images) = split_content(i, &m.content)?;
        match m.role.as_str() {
            "system" | "developer" => continue,
            "user" => {
                for url in images {
                    if let Some(first) = image_at {
                        return Err(bad(format!(
                            "messages[{i}]: at most one image per conversation (LaVIN attends to \
                             one image); the first is in messages[{first}]"
                        )));
                    }
                    let img = decode_image(&url)
                        .map_err(|e| bad(format!("messages[{i}]: bad image: {e}")))?;
                    conv.set_image(img);
                    image_at = Some(i);
                }
                if !text.trim().is_empty() {
                    conv.ask(text.trim());
                }
            }
            "assistant" => {
                if !images.is_empty() {
                    return Err(bad(format!(
                        "messages[{i}]: assistant messages cannot hold images"
                    )));
                }
                conv.add_reply(text.trim());
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role {other:?} is not supported"
                )))
            }
        }
        last_role = m.role.as_str();
    }
    if last_role != "user" {
        return Err(bad("the last message must come from the user"));
    }
    Ok(conv.request())
}

/// Sampling settings of each of the `n` choices of a body, with the server's defaults.
/// `max_tokens` above `max_new` is clamped to it (the model also stops at its context);
/// choice `i` samples with seed `seed + i`, and without a seed the first is `fresh_seed`.
pub fn to_params(
    req: &ChatRequest,
    defaults: &SamplingParams,
    max_new: usize,
    max_n: usize,
    fresh_seed: u64,
) -> Result<Vec<SamplingParams>, BadRequest> {
    let p = SamplingParams {
        max_gen_len: req.max_tokens.unwrap_or(defaults.max_gen_len).min(max_new),
        temperature: req.temperature.unwrap_or(defaults.temperature),
        top_p: req.top_p.unwrap_or(defaults.top_p),
        top_k: req.top_k.unwrap_or(defaults.top_k),
        seed: req.seed.unwrap_or(fresh_seed),
    };
    if !(p.temperature.is_finite() && p.temperature >= 0.0) {
        return Err(bad_field(
            "temperature",
            format!("must be >= 0, got {}", p.temperature),
        ));
    }
    if !(0.0..=1.0).contains(&p.top_p) {
        return Err(bad_field(
            "top_p",
            format!("must be within [0, 1], got {}", p.top_p),
        ));
    }
    if p.max_gen_len == 0 {
        let name = if req.max_tokens.is_some() {
            "max_tokens"
        } else {
            "max_new_tokens"
        };
        return Err(bad_field(name, "must be at least 1"));
    }
    if req.n == 0 || req.n > max_n {
        return Err(bad_field(
            "n",
            format!(
                "must be within 1..={max_n} (the server's batch size), got {}",
                req.n
            ),
        ));
    }
    Ok((0..req.n as u64)
        .map(|i| SamplingParams {
            seed: p.seed.wrapping_add(i),
            ..p.clone()
        })
        .collect())
}

/// `finish_reason` string.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// One finished choice.
pub struct Choice {
    /// The reply text.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens generated.
    pub tokens: usize,
}

/// Non-streaming response body (`choices` in index order).
pub fn completion_body(
    id: &str,
    created: u64,
    model: &str,
    prompt_tokens: usize,
    choices: &[Choice],
) -> Value {
    let list: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": null,
                "finish_reason": finish_str(c.finish),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": list,
        "usage": usage(prompt_tokens, choices.iter().map(|c| c.tokens).sum()),
    })
}

/// One `chat.completion.chunk` of choice `index`.
pub fn chunk_body(
    id: &str,
    created: u64,
    model: &str,
    index: usize,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    })
}

/// An OpenAI-style error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error details, the fields OpenAI sends.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `server_error`, `server_busy`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_api_key`, `model_not_found`, ...), if there is one.
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: None,
            },
        }
    }

    /// With the field at fault.
    pub fn param(mut self, param: Option<String>) -> Self {
        self.error.param = param;
        self
    }

    /// With a code.
    pub fn code(mut self, code: &str) -> Self {
        self.error.code = Some(code.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn decoder() -> ImageDecoder {
        Arc::new(|url: &str| {
            if url.contains("good") {
                Ok(ImageInput {
                    name: "upload".into(),
                    pixels: Arc::new(vec![]),
                })
            } else {
                Err("not an image".into())
            }
        })
    }

    fn parse(v: Value) -> ChatRequest {
        ChatRequest::from_json(v).unwrap()
    }

    #[test]
    fn text_and_image_parts_map_to_the_demo_format() {
        let r = parse(json!({"messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:good"}},
                {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Colour?"}
        ]}));
        let g = to_gen_request(&r, &decoder()).unwrap();
        assert!(g.image.is_some());
        assert_eq!(
            g.prompt,
            "Instruction:  What is it?\nResponese: A cat.\nInstruction: Colour?\nResponese:"
        );
    }

    #[test]
    fn errors_are_bad_requests() {
        let bad_img = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "junk"}}, {"type": "text", "text": "q"}]}]}));
        assert!(to_gen_request(&bad_img, &decoder())
            .unwrap_err()
            .message
            .contains("bad image"));
        let two = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": "good1"}, {"type": "image_url", "image_url": "good2"}]}]}));
        assert!(to_gen_request(&two, &decoder())
            .unwrap_err()
            .message
            .contains("one image"));
        let last = parse(json!({"messages": [{"role": "assistant", "content": "hi"}]}));
        assert!(to_gen_request(&last, &decoder()).is_err());
        let empty = parse(json!({"messages": []}));
        assert!(to_gen_request(&empty, &decoder()).is_err());
        let d = SamplingParams::default();
        let hot = parse(json!({"messages": [], "top_p": 2.0}));
        assert_eq!(
            to_params(&hot, &d, 512, 8, 0).unwrap_err().param.as_deref(),
            Some("top_p")
        );
        // Too many new tokens: clamped, not refused; max_completion_tokens wins.
        let long = parse(json!({"messages": [], "max_tokens": 100000}));
        assert_eq!(to_params(&long, &d, 512, 8, 0).unwrap()[0].max_gen_len, 512);
        let both = parse(json!({"messages": [], "max_tokens": 9, "max_completion_tokens": 3}));
        assert_eq!(to_params(&both, &d, 512, 8, 0).unwrap()[0].max_gen_len, 3);
        let zero = parse(json!({"messages": [], "max_tokens": 0}));
        assert!(to_params(&zero, &d, 512, 8, 0).is_err());
        let ok = parse(json!({"messages": [], "temperature": 0, "max_tokens": 5}));
        let p = to_params(&ok, &d, 512, 8, 77).unwrap();
        assert_eq!(
            (p[0].temperature, p[0].top_p, p[0].max_gen_len, p[0].seed),
            (0.0, 0.75, 5, 77)
        );
        // n choices: consecutive seeds from the request's seed; n beyond the batch is refused.
        let three = parse(json!({"messages": [], "n": 3, "seed": 10}));
        let seeds: Vec<u64> = to_params(&three, &d, 512, 8, 0)
            .unwrap()
            .iter()
            .map(|p| p.seed)
            .collect();
        assert_eq!(seeds, vec![10, 11, 12]);
        let many = parse(json!({"messages": [], "n": 9}));
        assert_eq!(
            to_params(&many, &d, 512, 8, 0)
                .unwrap_err()
                .param
                .as_deref(),
            Some("n")
        );
    }

    #[test]
    fn fields_are_honoured_ignored_or_refused_by_name() {
        let refused = |v: Value| ChatRequest::from_json(v).unwrap_err();
        let base = |extra: Value| {
            let mut v = json!({"messages": [{"role": "user", "content": "q"}]});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        for (extra, name) in [
            (json!({"tools": []}), "tools"),
            (json!({"tool_choice": "auto"}), "tool_choice"),
            (json!({"functions": []}), "functions"),
            (json!({"logprobs": true}), "logprobs"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"stop": 3}), "stop"),
            (json!({"temperature": "hot"}), "temperature"),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (json!({"frobnicate": 1}), "frobnicate"),
        ] {
            let e = refused(base(extra.clone()));
            assert_eq!(e.param.as_deref(), Some(name), "{extra}: {e}");
            assert!(e.message.contains(name), "{extra}: {e}");
        }
        let ok = ChatRequest::from_json(base(json!({
            "user": "u1", "logprobs": false, "response_format": {"type": "text"},
            "presence_penalty": 0, "stop": "END", "stream": true,
            "stream_options": {"include_usage": true}
        })))
        .unwrap();
        assert_eq!(ok.stop, vec!["END".to_string()]);
        assert!(ok.include_usage);
        let missing = refused(json!({"nonsense": true}));
        assert_eq!(missing.param.as_deref(), Some("messages"));
    }
}
