//! The OpenAI-compatible API against a scripted generator on 127.0.0.1:0.

mod common;

use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use lavin_infer::generator::{
    GenError, GenOutput, GenRequest, Generator, OnToken, SamplingParams, ScriptedGenerator,
};
use lavin_infer::serve::ServeConfig;
use serde_json::{json, Value};

use common::{client, png_bytes, TestServer};

fn data_url() -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_bytes(20, 12))
    )
}

fn image_question(url: &str, text: &str) -> Value {
    json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": text}]}])
}

#[tokio::test]
async fn non_streaming_completion() {
    let srv = TestServer::start(Box::new(ScriptedGenerator::echo()), ServeConfig::default()).await;
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"model": "lavin-tiny", "messages": image_question(&data_url(), "What is shown?")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "lavin-tiny");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "I see an image and you said: Instruction:  What is shown?"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Raw base64 (no data: prefix) and a plain string content work too.
    let raw = base64::engine::general_purpose::STANDARD.encode(png_bytes(8, 8));
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": image_question(&raw, "And now?")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "I see no image and you said: Instruction: Hello"
    );

    let health: Value = client()
        .get(srv.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let page = client()
        .get(srv.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"image-input\""));
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_payloads(resp: reqwest::Response) -> Vec<String> {
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    buf.split("\n\n")
        .filter_map(|block| {
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

#[tokio::test]
async fn streaming_completion() {
    let gen = ScriptedGenerator::constant("A red square on a white background.")
        .with_delay(Duration::from_millis(2));
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": image_question(&data_url(), "Describe it."), "stream": true, "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let payloads = sse_payloads(resp).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "A red square on ");
    assert!(chunks.len() >= 6, "one chunk per token: {chunks:?}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

async fn expect_400(srv: &TestServer, body: Value, needle: &str) {
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "{body}");
    let err: Value = resp.json().await.unwrap();
    let msg = err["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn bad_requests_get_400_and_the_server_keeps_serving() {
    let mut gen = ScriptedGenerator::constant("fine");
    gen.max_prompt_chars = 200;
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    let not_png = base64::engine::general_purpose::STANDARD.encode(b"definitely not an image");
    expect_400(
        &srv,
        json!({"messages": image_question(&format!("data:image/png;base64,{not_png}"), "q")}),
        "bad image",
    )
    .await;
    expect_400(
        &srv,
        json!({"messages": image_question("data:image/png;base64,@@@", "q")}),
        "base64",
    )
    .await;
    expect_400(
        &srv,
        json!({"messages": image_question("https://example.com/x.png", "q")}),
        "remote",
    )
    .await;
    // Over-long prompt: rejected by the model (stream or not).
    let long = "word ".repeat(100);
    expect_400(
        &srv,
        json!({"messages": [{"role": "user", "content": long}]}),
        "too long",
    )
    .await;
    expect_400(
        &srv,
        json!({"messages": [{"role": "user", "content": long}], "stream": true}),
        "too long",
    )
    .await;
    expect_400(
        &srv,
        json!({"messages": [{"role": "user", "content": "q"}], "top_p": 3}),
        "top_p",
    )
    .await;
    expect_400(&srv, json!({"messages": []}), "empty").await;
    expect_400(&srv, json!({"nonsense": true}), "messages").await;
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Still serving.
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "ok?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn body_limit_is_a_json_413() {
    let cfg = ServeConfig {
        max_body_bytes: 1024,
        ..ServeConfig::default()
    };
    let srv = TestServer::start(Box::new(ScriptedGenerator::constant("x")), cfg).await;
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": image_question(&data_url(), &"x".repeat(4000))}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn concurrent_requests_are_all_answered() {
    let gen = ScriptedGenerator::echo().with_delay(Duration::from_millis(3));
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    let url = srv.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client()
                    .post(&url)
                    .json(&json!({"messages": [{"role": "user", "content": format!("question {i}")}], "stream": i % 2 == 0}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let text = resp.text().await.unwrap();
                assert!(text.contains(&format!("question {i}")) || text.contains("question"), "{text}");
                if i % 2 == 0 {
                    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// A generator that panics on request.
struct Flaky;

impl Generator for Flaky {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        _params: &SamplingParams,
        _on_token: &mut OnToken<'_>,
    ) -> Result<Vec<GenOutput>, GenError> {
        if requests[0].prompt.contains("boom") {
            panic!("boom requested");
        }
        ScriptedGenerator::constant("ok").generate(requests, _params, _on_token)
    }
}

#[tokio::test]
async fn a_panicking_model_is_a_500_not_a_crash() {
    let srv = TestServer::start(Box::new(Flaky), ServeConfig::default()).await;
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "boom"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let resp = client()
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "calm"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
