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

async fn health(srv: &TestServer) -> Value {
    client()
        .get(srv.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post(srv: &TestServer, body: Value) -> reqwest::Response {
    client()
        .post(srv.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Polls `/health` until nothing is pending; returns how long that took.
async fn wait_idle(srv: &TestServer, limit: Duration) -> Duration {
    let t0 = std::time::Instant::now();
    loop {
        if health(srv).await["pending"] == 0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "the request still holds its slot after {limit:?}: {}",
            health(srv).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_waiting_together_run_as_one_batch_with_their_own_settings() {
    let gen = ScriptedGenerator::constant("w ".repeat(40)).with_delay(Duration::from_millis(10));
    let sizes = gen.batch_sizes.clone();
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    // One request runs alone (about 0.4 s) ...
    let first = tokio::spawn(post_owned(
        srv.url(""),
        json!({"messages": user("a"), "max_tokens": 40}),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... while three more arrive: they wait and start together, each with its own length.
    let rest: Vec<_> = [3usize, 5, 7]
        .into_iter()
        .map(|m| {
            tokio::spawn(post_owned(
                srv.url(""),
                json!({"messages": user("b"), "max_tokens": m}),
            ))
        })
        .collect();
    let body = first.await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 40);
    for (task, m) in rest.into_iter().zip([3, 5, 7]) {
        let body = task.await.unwrap();
        assert_eq!(body["usage"]["completion_tokens"], m, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
    assert_eq!(*sizes.lock().unwrap(), vec![1, 3]);
    let h = health(&srv).await;
    assert_eq!(
        (h["batches"].as_u64(), h["largest_batch"].as_u64()),
        (Some(2), Some(3))
    );
}

async fn post_owned(base: String, body: Value) -> Value {
    let resp = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_slot() {
    // 500 tokens at 20 ms: 10 s if nobody stopped it.
    let gen = ScriptedGenerator::constant("w ".repeat(500)).with_delay(Duration::from_millis(20));
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    // Streaming: read a little, hang up.
    let resp = post(
        &srv,
        json!({"messages": user("long"), "stream": true, "max_tokens": 500}),
    )
    .await;
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    stream.next().await.unwrap().unwrap();
    assert_eq!(health(&srv).await["pending"], 1);
    drop(stream);
    let took = wait_idle(&srv, Duration::from_secs(3)).await;
    println!("streaming slot freed {took:?} after the client left");
    // Not streaming: the client gives up waiting.
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = quick
        .post(srv.url("/v1/chat/completions"))
        .json(&json!({"messages": user("long"), "max_tokens": 500}))
        .send()
        .await;
    assert!(gone.is_err(), "the request should have timed out");
    let took = wait_idle(&srv, Duration::from_secs(3)).await;
    println!("non-streaming slot freed {took:?} after the client left");
    // And the server still answers.
    let resp = post(&srv, json!({"messages": user("short"), "max_tokens": 2})).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stop_strings_end_the_reply_and_are_not_returned() {
    let gen = ScriptedGenerator::constant("alpha beta END gamma delta");
    let sizes = gen.batch_sizes.clone();
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    let body: Value = post(&srv, json!({"messages": user("q"), "stop": "END"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "alpha beta");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Streaming, a stop string spanning two tokens ("beta " + "END"): the held-back "a E" never
    // reaches the client, and generation ends there (3 tokens, not 5).
    let resp = post(
        &srv,
        json!({"messages": user("q"), "stop": ["zzz", "a EN"], "stream": true,
               "stream_options": {"include_usage": true}}),
    )
    .await;
    let payloads = sse_payloads(resp).await;
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "alpha bet");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "stop");
    assert_eq!(sizes.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn n_choices_run_in_one_batch() {
    let gen = ScriptedGenerator::echo();
    let sizes = gen.batch_sizes.clone();
    let srv = TestServer::start(Box::new(gen), ServeConfig::default()).await;
    let body: Value = post(&srv, json!({"messages": user("hi"), "n": 3}))
        .await
        .json()
        .await
        .unwrap();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(
            c["message"]["content"],
            "I see no image and you said: Instruction: hi"
        );
    }
    let per_choice = body["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(per_choice % 3, 0);
    assert_eq!(*sizes.lock().unwrap(), vec![3]);
    // Streaming: every choice gets its role chunk, its text and its finish chunk.
    let resp = post(
        &srv,
        json!({"messages": user("hi"), "n": 2, "stream": true}),
    )
    .await;
    let payloads = sse_payloads(resp).await;
    for i in 0..2 {
        let text: String = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str::<Value>(p).unwrap())
            .filter(|c| c["choices"][0]["index"] == i)
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "I see no image and you said: Instruction: hi");
    }
    expect_400(&srv, json!({"messages": user("hi"), "n": 9}), "n:").await;
}

#[tokio::test]
async fn openai_details_models_clamp_and_error_fields() {
    let srv = TestServer::start(
        Box::new(ScriptedGenerator::constant("x y")),
        ServeConfig::default(),
    )
    .await;
    let m: Value = client()
        .get(srv.url("/v1/models/lavin"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (m["id"].as_str(), m["object"].as_str()),
        (Some("lavin"), Some("model"))
    );
    let resp = client()
        .get(srv.url("/v1/models/gpt-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found");
    // Far more tokens than allowed: clamped, answered.
    let resp = post(
        &srv,
        json!({"messages": user("q"), "max_tokens": 1_000_000}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = post(
        &srv,
        json!({"messages": user("q"), "max_completion_tokens": 1, "max_tokens": 5}),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 1);
    // Refused fields are named in `param`.
    let resp = post(
        &srv,
        json!({"messages": user("q"), "tools": [{"type": "function"}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "tools");
    assert!(err["error"]["message"].as_str().unwrap().contains("tools"));
    assert!(err["error"].as_object().unwrap().contains_key("code"));
    let resp = client().get(srv.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn api_key_and_cors() {
    let cfg = ServeConfig {
        api_key: Some("s3cret".into()),
        cors_origin: Some("http://app.example".into()),
        ..ServeConfig::default()
    };
    let srv = TestServer::start(Box::new(ScriptedGenerator::constant("ok")), cfg).await;
    let body = json!({"messages": user("q")});
    let resp = post(&srv, body.clone()).await;
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_api_key");
    let wrong = client()
        .post(srv.url("/v1/chat/completions"))
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .post(srv.url("/v1/chat/completions"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(
        right.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    // The page and /health stay open; the page knows it must ask for the key.
    assert_eq!(
        client().get(srv.url("/")).send().await.unwrap().status(),
        200
    );
    assert_eq!(health(&srv).await["api_key_required"], true);
    // A preflight is answered without the key.
    let pre = client()
        .request(reqwest::Method::OPTIONS, srv.url("/v1/chat/completions"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
}

#[tokio::test]
async fn local_image_paths_only_inside_the_allowed_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("in.png");
    std::fs::write(&inside, png_bytes(16, 16)).unwrap();
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path().join("out.png");
    std::fs::write(&outside, png_bytes(16, 16)).unwrap();

    let closed =
        TestServer::start(Box::new(ScriptedGenerator::echo()), ServeConfig::default()).await;
    let q = |p: &str| json!({"messages": image_question(p, "What?")});
    expect_400(&closed, q(&inside.to_string_lossy()), "--allowed-image-dir").await;

    let cfg = ServeConfig {
        allowed_image_dir: Some(dir.path().to_path_buf()),
        ..ServeConfig::default()
    };
    let open = TestServer::start(Box::new(ScriptedGenerator::echo()), cfg).await;
    for url in [
        inside.to_string_lossy().to_string(),
        format!("file://{}", inside.display()),
    ] {
        let body: Value = post(&open, q(&url)).await.json().await.unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "I see an image and you said: Instruction:  What?",
            "{url}"
        );
    }
    expect_400(&open, q(&outside.to_string_lossy()), "outside").await;
    // `..` cannot climb out either.
    let sneaky = dir
        .path()
        .join("..")
        .join(outside_dir.path().file_name().unwrap())
        .join("out.png");
    expect_400(&open, q(&sneaky.to_string_lossy()), "outside").await;
    expect_400(
        &open,
        q(&dir.path().join("missing.png").to_string_lossy()),
        "cannot open",
    )
    .await;
    // Inline images still work, and a second image names the limit.
    let two = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url()}},
        {"type": "image_url", "image_url": {"url": data_url()}}]}]});
    expect_400(&open, two, "at most one image").await;
}
