//! End to end in headless Chromium (Debian packages `chromium` and `chromium-driver`):
//! the page loads, an image is uploaded, a question is sent, a streamed answer appears, and
//! the image stays shown beside the conversation.
//! A screenshot is kept under `target/browser-e2e/chat.png`.
//!
//! Fails (does not skip) when Chromium or chromedriver is missing.

mod common;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use lavin_infer::generator::Generator;
use lavin_infer::serve::ServeConfig;
use serde_json::json;

use common::{png_bytes, TestServer};

const INSTALL_HINT: &str = "run the browser install step of .ci/run \
     (apt-get update && apt-get install -y chromium chromium-driver)";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver(driver: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL_HINT}", driver.display()));
    let d = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start listening on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("browser-e2e")
}

/// The model behind the page: the real tiny LaVIN (the bundled pretrained base, router
/// temperature 5 as the demo), exactly what `lavin-infer serve` loads without flags.
fn test_generator() -> Box<dyn Generator> {
    use clap::Parser;
    let cli =
        lavin_infer::cli::Cli::try_parse_from(["lavin-infer", "serve", "--max-seq-len", "160"])
            .expect("flags");
    let lavin_infer::cli::Command::Serve(args) = cli.command else {
        unreachable!("parsed serve")
    };
    lavin_infer::load::load_generator("browser test", &args.session.model, 5.0)
        .expect("the bundled tiny model loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_streams_an_answer_about_an_uploaded_image() {
    let chromium = find_program(&["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("Chromium is not installed: {INSTALL_HINT}"));
    let chromedriver = find_program(&["chromedriver"])
        .unwrap_or_else(|| panic!("chromedriver is not installed: {INSTALL_HINT}"));

    let srv = TestServer::start(test_generator(), ServeConfig::default()).await;
    let driver = start_driver(&chromedriver).await;

    let work = tempfile::tempdir().unwrap();
    let image_path = work.path().join("square.png");
    std::fs::write(&image_path, png_bytes(64, 48)).unwrap();
    let profile = work.path().join("profile");

    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium.to_string_lossy(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,800",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}; {INSTALL_HINT}"));

    let result = async {
        client.goto(&srv.url("/")).await?;
        assert_eq!(client.title().await?, "LaVIN chat");
        // Upload the image.
        let input = client.find(Locator::Id("image-input")).await?;
        input.send_keys(&image_path.to_string_lossy()).await?;
        client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#preview[src^='data:image/png']"))
            .await?;
        // Ask.
        let q = client.find(Locator::Id("question")).await?;
        q.send_keys("What shape is this?").await?;
        client.find(Locator::Id("send")).await?.click().await?;
        // The reply streams in, then completes.
        let done = client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(".msg.assistant[data-done='1']"))
            .await?;
        let text = done.text().await?;
        let chunks: usize = done
            .attr("data-chunks")
            .await?
            .unwrap_or_default()
            .parse()
            .unwrap_or(0);
        // The uploaded image stays in view beside the conversation (left of the messages),
        // and the question's bubble carries it too.
        let preview = client.find(Locator::Id("preview")).await?;
        let shown = preview.is_displayed().await?;
        let (px, _, pw, ph) = preview.rectangle().await?;
        let (mx, _, _, _) = client
            .find(Locator::Id("messages"))
            .await?
            .rectangle()
            .await?;
        let in_bubble = client
            .find_all(Locator::Css(".msg.user img[src^='data:image/png']"))
            .await?
            .len();
        let shot = client.screenshot().await?;
        Ok::<_, fantoccini::error::CmdError>((
            text,
            chunks,
            shot,
            (shown, px, pw, ph, mx, in_bubble),
        ))
    }
    .await;
    let _ = client.close().await;
    let (text, chunks, shot, (shown, px, pw, ph, mx, in_bubble)) = result.expect("browser steps");

    let dir = artifact_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let shot_path = dir.join("chat.png");
    std::fs::write(&shot_path, &shot).unwrap();
    let shot_path = shot_path.canonicalize().unwrap_or(shot_path);
    println!("screenshot: {}", shot_path.display());

    // A real (tiny) model: its words are its own, but a reply must have streamed in.
    assert!(!text.trim().is_empty(), "the assistant message is empty");
    assert!(
        chunks >= 1,
        "the answer should arrive as streamed chunks, got {chunks}"
    );
    assert!(
        shown && pw > 20.0 && ph > 10.0,
        "the image preview is not shown ({pw}x{ph})"
    );
    assert!(
        px + pw <= mx,
        "the preview (x {px}, width {pw}) should sit left of the messages (x {mx})"
    );
    assert_eq!(in_bubble, 1, "the question's bubble shows the image once");
    assert!(
        shot.starts_with(&[0x89, b'P', b'N', b'G']),
        "screenshot is a PNG"
    );
}
