//! The OpenAI chat-completions request and response shapes, and their mapping onto a LaVIN
//! conversation.
//!
//! Mapping: `system` messages are ignored (the original's conversation has no system text);
//! `user` → `Instruction`, `assistant` → `Responese`. An image part (data URL or raw base64) in a
//! user message attaches the conversation's one image at that point, as the demo's upload does;
//! a second image is an error. The last message must come from the user.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::Conversation;
use crate::generator::{FinishReason, GenOutput, GenRequest, ImageInput, SamplingParams};

/// Decodes one image given as a data URL or raw base64.
pub type ImageDecoder = std::sync::Arc<dyn Fn(&str) -> Result<ImageInput, String> + Send + Sync>;

/// `POST /v1/chat/completions` body (the fields LaVIN uses; others are ignored).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model name (echoed back).
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature (0 = greedy).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k (extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// New tokens at most.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Sampler seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: bool,
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

/// A request the API cannot take; becomes a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
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
    if req.messages.is_empty() {
        return Err(bad("messages must not be empty"));
    }
    let mut conv = Conversation::new();
    let mut last_role = "";
    for (i, m) in req.messages.iter().enumerate() {
        let (text, images) = split_content(i, &m.content)?;
        match m.role.as_str() {
            "system" | "developer" => continue,
            "user" => {
                for url in images {
                    if conv.image.is_some() {
                        return Err(bad("only one image per conversation is supported"));
                    }
                    let img = decode_image(&url)
                        .map_err(|e| bad(format!("messages[{i}]: bad image: {e}")))?;
                    conv.set_image(img);
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

/// Sampling settings of a body, with the server's defaults.
pub fn to_params(
    req: &ChatRequest,
    defaults: &SamplingParams,
    max_new: usize,
) -> Result<SamplingParams, BadRequest> {
    let p = SamplingParams {
        max_gen_len: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(defaults.max_gen_len),
        temperature: req.temperature.unwrap_or(defaults.temperature),
        top_p: req.top_p.unwrap_or(defaults.top_p),
        top_k: req.top_k.unwrap_or(defaults.top_k),
        seed: req.seed.unwrap_or(defaults.seed),
    };
    if !(p.temperature.is_finite() && p.temperature >= 0.0) {
        return Err(bad(format!(
            "temperature must be >= 0, got {}",
            p.temperature
        )));
    }
    if !(0.0..=1.0).contains(&p.top_p) {
        return Err(bad(format!("top_p must be within [0, 1], got {}", p.top_p)));
    }
    if p.max_gen_len == 0 || p.max_gen_len > max_new {
        return Err(bad(format!(
            "max_tokens must be within 1..={max_new}, got {}",
            p.max_gen_len
        )));
    }
    Ok(p)
}

/// `finish_reason` string.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Non-streaming response body.
pub fn completion_body(id: &str, created: u64, model: &str, reply: &str, out: &GenOutput) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": finish_str(out.finish),
        }],
        "usage": {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.token_ids.len(),
            "total_tokens": out.prompt_tokens + out.token_ids.len(),
        }
    })
}

/// One `chat.completion.chunk`.
pub fn chunk_body(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

/// An OpenAI-style error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Error details.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Human-readable message.
    pub message: String,
    /// `invalid_request_error`, `server_error`, `server_busy`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
            },
        }
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
        serde_json::from_value(v).unwrap()
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
            .0
            .contains("bad image"));
        let two = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": "good1"}, {"type": "image_url", "image_url": "good2"}]}]}));
        assert!(to_gen_request(&two, &decoder())
            .unwrap_err()
            .0
            .contains("one image"));
        let last = parse(json!({"messages": [{"role": "assistant", "content": "hi"}]}));
        assert!(to_gen_request(&last, &decoder()).is_err());
        let empty = parse(json!({"messages": []}));
        assert!(to_gen_request(&empty, &decoder()).is_err());
        let d = SamplingParams::default();
        let hot = parse(json!({"messages": [], "top_p": 2.0}));
        assert!(to_params(&hot, &d, 512).is_err());
        let long = parse(json!({"messages": [], "max_tokens": 100000}));
        assert!(to_params(&long, &d, 512).is_err());
        let ok = parse(json!({"messages": [], "temperature": 0, "max_tokens": 5}));
        let p = to_params(&ok, &d, 512).unwrap();
        assert_eq!((p.temperature, p.top_p, p.max_gen_len), (0.0, 0.75, 5));
    }
}
