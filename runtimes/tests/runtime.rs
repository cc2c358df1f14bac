//! The Wasm runtime through the `Runtime` trait, as the agent uses it: a
//! command component runs to its end (exit, memory limit), an HTTP component
//! serves on loopback until it is stopped, a container image is "not mine",
//! and an unwritable compile cache does not stop a run.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use skiff_runtimes::oci::{Blob, OciImage};
use skiff_runtimes::oci::{OciContainer, unpack::ImageDefaults};
use skiff_runtimes::wasm::WasmRuntime;
use skiff_runtimes::{
    ContainerSpec, Content, EndReason, ResolveSpec, RunRequest, Runtime, RuntimeError,
};

#[path = "../../tests/e2e/common/examples.rs"]
mod examples;

fn content(name: &str, file: &str) -> Content {
    let bytes = std::fs::read(examples::example_wasm(name, file)).expect("example");
    Content::Wasm {
        layer_digest: format!("sha256:{name}"),
        bytes: Arc::new(bytes),
    }
}

/// A Wasm run never asks for a container spec.
struct NoSpec;

impl ResolveSpec for NoSpec {
    fn resolve(&self, _: &ImageDefaults) -> Result<OciContainer, RuntimeError> {
        Err(RuntimeError::Config(
            "no container spec for a Wasm run".into(),
        ))
    }
}

fn request(dir: &std::path::Path, args: &[&str], ports: Vec<u16>) -> RunRequest {
    RunRequest {
        container: "app".into(),
        spec: ContainerSpec {
            name: "app".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("JOB_NAME".into(), "job-app".into())],
            memory_limit: Some(32 << 20),
            ..ContainerSpec::default()
        },
        ports,
        request_timeout: Duration::from_secs(5),
        deadline: Some(Duration::from_secs(10)),
        log: dir.join("0.log"),
        sandbox: tokio::runtime::Handle::current(),
        http_stats: Arc::default(),
        resolve: Arc::new(NoSpec),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_to_its_end_through_the_trait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = WasmRuntime::new(&dir.path().join("cache")).expect("runtime");
    let rt: Arc<dyn Runtime> = Arc::new(wasm);
    let job = content("wasm-job", "wasm_job.wasm");
    assert!(rt.accepts(&job).is_ok());
    let run = rt
        .start(&job, request(dir.path(), &["a", "b"], Vec::new()))
        .await
        .expect("starts");
    assert!(!run.serves_http() && !run.can_exec());
    let t = run.wait().await.expect("ends");
    assert_eq!((t.exit_code, t.reason), (0, EndReason::Completed));
    let log = std::fs::read_to_string(dir.path().join("0.log")).expect("log");
    assert!(
        log.contains("hello from job-app") && log.contains("args: a b"),
        "{log}"
    );

    let run = rt
        .start(
            &job,
            request(dir.path(), &["--alloc-mb", "128"], Vec::new()),
        )
        .await
        .expect("starts");
    let t = run.wait().await.expect("ends");
    assert_eq!((t.exit_code, t.reason), (137, EndReason::OomKilled));
    assert_eq!(t.event.map(|e| e.reason), Some("OOMKilled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_be_written_costs_a_compile_not_the_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let rt: Arc<dyn Runtime> = Arc::new(WasmRuntime::new(&cache).expect("runtime"));
    // The cache directory is gone and a file stands in its place: every write
    // into it fails, even as root (as on a full disk).
    std::fs::remove_dir(&cache).expect("remove cache dir");
    std::fs::write(&cache, b"not a directory").expect("file in its place");
    let job = content("wasm-job", "wasm_job.wasm");
    let run = rt
        .start(&job, request(dir.path(), &["a"], Vec::new()))
        .await
        .expect("starts without a cache");
    let t = run.wait().await.expect("ends");
    assert_eq!((t.exit_code, t.reason), (0, EndReason::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_component_serves_until_it_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt: Arc<dyn Runtime> =
        Arc::new(WasmRuntime::new(&dir.path().join("cache")).expect("runtime"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let app = content("hello-wasm", "hello_wasm.wasm");
    let run = rt
        .start(&app, request(dir.path(), &[], vec![port]))
        .await
        .expect("listens");
    assert!(run.serves_http());
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .expect("request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A second start on the same port fails with the run reason.
    let busy = rt
        .start(&app, request(dir.path(), &[], vec![port]))
        .await
        .err()
        .expect("the port is taken");
    assert!(matches!(busy, RuntimeError::Run(_)), "{busy:?}");
    tokio::time::timeout(
        Duration::from_secs(10),
        run.stop(Duration::from_secs(1), Box::pin(async {})),
    )
    .await
    .expect("a stop ends the run");
    // The listeners go with the run.
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "still listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_container_image_is_not_mine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = WasmRuntime::new(&dir.path().join("cache")).expect("runtime");
    let blob = Blob {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: "sha256:x".into(),
        bytes: Arc::new(b"{}".to_vec()),
    };
    let image = Content::Oci(Arc::new(OciImage {
        reference: "busybox:1".into(),
        manifest: blob.clone(),
        config: blob,
        layers: Vec::new(),
    }));
    assert!(matches!(rt.accepts(&image), Err(RuntimeError::NotMine(_))));
}
