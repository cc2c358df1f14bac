//! The Wasm runtime against the example components (built here for wasm32-wasip2):
//! commands with exit codes, output, memory limits and timeouts; HTTP components
//! that keep serving when one request blows its memory or time; bad images.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use skiff_runtimes::wasm::{HttpApp, WasmError, WasmRuntime, run_command};
use skiff_runtimes::{ContainerSpec, Exit};

#[path = "../../tests/e2e/common/examples.rs"]
mod examples;

/// Build an example component and return its bytes.
fn example(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(examples::example_wasm(name, file)).unwrap()
}

fn runtime() -> (tempfile::TempDir, WasmRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let rt = WasmRuntime::new(&dir.path().join("cache")).unwrap();
    (dir, rt)
}

async fn run(
    rt: &WasmRuntime,
    dir: &std::path::Path,
    spec: ContainerSpec,
) -> (Exit, String, String) {
    let bytes = example("wasm-job", "wasm_job.wasm");
    let component = rt.load("sha256:job", &bytes).unwrap();
    let out = dir.join(format!("{}.out", spec.name));
    let err = dir.join(format!("{}.err", spec.name));
    let exit = run_command(
        rt,
        &component,
        &spec,
        std::fs::File::create(&out).unwrap(),
        std::fs::File::create(&err).unwrap(),
    )
    .await
    .unwrap();
    (
        exit,
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_exit_codes_output_limits() {
    let (dir, rt) = runtime();
    let spec = |name: &str, args: &[&str]| ContainerSpec {
        name: name.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("JOB_NAME".into(), format!("job-{name}"))],
        memory_limit: Some(32 << 20),
        timeout: Some(Duration::from_secs(2)),
        mounts: Vec::new(),
        netns: None,
        memory_gauge: None,
        max_concurrency: None,
        ..ContainerSpec::default()
    };
    let (exit, out, err) = run(&rt, dir.path(), spec("ok", &["a", "b"])).await;
    assert_eq!(exit, Exit::Code(0));
    assert!(
        out.contains("hello from job-ok") && out.contains("args: a b"),
        "{out}"
    );
    assert!(err.contains("stderr"), "{err}");
    // Rust's std on wasip2 reports any non-zero exit through wasi:cli/exit as
    // `err`, which WASI 0.2 carries as code 1.
    let (exit, _, _) = run(&rt, dir.path(), spec("fail", &["--exit", "3"])).await;
    assert_eq!(exit, Exit::Code(1));
    assert_eq!(exit.reason_and_code(), ("Error", 1));
    let (exit, _, _) = run(&rt, dir.path(), spec("hog", &["--alloc-mb", "128"])).await;
    assert_eq!(exit, Exit::OutOfMemory);
    assert_eq!(exit.reason_and_code().0, "OOMKilled");
    let (exit, _, _) = run(&rt, dir.path(), spec("spin", &["--spin"])).await;
    assert_eq!(exit, Exit::TimedOut);
    // The second load comes from the on-disk cache.
    assert!(std::fs::read_dir(dir.path().join("cache")).unwrap().count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_are_preopened_directories() {
    let (dir, rt) = runtime();
    let (rw, ro) = (dir.path().join("rw"), dir.path().join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("present"), "x").unwrap();
    let spec = |name: &str, args: &[&str]| ContainerSpec {
        name: name.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        mounts: vec![
            skiff_runtimes::Mount {
                host_path: rw.clone(),
                guest_path: "/data".into(),
                read_only: false,
            },
            skiff_runtimes::Mount {
                host_path: ro.clone(),
                guest_path: "/etc/ro".into(),
                read_only: true,
            },
        ],
        ..Default::default()
    };
    let (exit, out, _) = run(&rt, dir.path(), spec("w", &["--write", "/data/f", "hi"])).await;
    assert_eq!(exit, Exit::Code(0), "{out}");
    assert_eq!(std::fs::read_to_string(rw.join("f")).unwrap(), "hi");
    let (exit, _, err) = run(&rt, dir.path(), spec("ro", &["--write", "/etc/ro/f", "hi"])).await;
    assert_eq!(
        exit,
        Exit::Code(1),
        "a read-only mount refuses writes: {err}"
    );
    assert!(!ro.join("f").exists());
    let (exit, _, _) = run(
        &rt,
        dir.path(),
        spec("seen", &["--expect-file", "/etc/ro/present"]),
    )
    .await;
    assert_eq!(exit, Exit::Code(0));
    let (exit, _, _) = run(
        &rt,
        dir.path(),
        spec("unseen", &["--expect-file", "/etc/ro/absent"]),
    )
    .await;
    assert_eq!(exit, Exit::Code(1));
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, mut rest) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (code, rest.to_string());
    }
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_component_serves_and_survives_bad_requests() {
    let (dir, rt) = runtime();
    let bytes = example("hello-wasm", "hello_wasm.wasm");
    let component = rt.load("sha256:hello", &bytes).unwrap();
    let gauge = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let spec = ContainerSpec {
        name: "hello".into(),
        env: vec![("GREETING".into(), "hi from the pod".into())],
        memory_limit: Some(32 << 20),
        timeout: Some(Duration::from_secs(1)),
        memory_gauge: Some(gauge.clone()),
        ..Default::default()
    };
    let log = std::fs::File::create(dir.path().join("hello.log")).unwrap();
    let app = HttpApp::new(&rt, &component, spec, log, Default::default()).unwrap();
    let stats = app.stats.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, serving) = tokio::sync::watch::channel(false);
    tokio::spawn(app.serve(listener, serving));
    let result = tokio::task::spawn_blocking(move || {
        let ok = get(addr, "/");
        let oom = get(addr, "/alloc?mb=128");
        let after_oom = get(addr, "/");
        let spin = get(addr, "/spin");
        let after_spin = get(addr, "/");
        // No pod namespace: outgoing requests are refused, even to loopback.
        let egress = get(addr, &format!("/fetch?url=http://{addr}/"));
        (ok, oom, after_oom, spin, after_spin, egress)
    })
    .await
    .unwrap();
    assert_eq!(result.0, (200, "hi from the pod\n".into()));
    assert_eq!(result.1.0, 500);
    assert_eq!(result.2.0, 200);
    assert_eq!(result.3.0, 500);
    assert_eq!(result.4.0, 200);
    assert_eq!(result.5.0, 502, "{}", result.5.1);
    assert!(result.5.1.contains("HttpRequestDenied"), "{}", result.5.1);
    use std::sync::atomic::Ordering;
    assert_eq!(stats.out_of_memory.load(Ordering::Relaxed), 1);
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 1);
    // Every request is over: nothing in flight, the time they took counted,
    // and the guests' memory given back.
    assert_eq!(stats.requests.load(Ordering::Relaxed), 6);
    assert_eq!(stats.in_flight.load(Ordering::Relaxed), 0);
    assert!(
        stats.busy_now_ns() >= 1_000_000_000,
        "the /spin request ran ≥ 1 s"
    );
    assert!(stats.last_end_ns.load(Ordering::Relaxed) > 0);
    assert_eq!(gauge.load(Ordering::Relaxed), 0);
    let log = std::fs::read_to_string(dir.path().join("hello.log")).unwrap();
    assert!(log.contains("request /alloc?mb=128"), "{log}");
}

#[test]
fn bad_images_are_named() {
    let (_dir, rt) = runtime();
    assert!(matches!(
        rt.load("sha256:elf", b"\x7fELF\x02\x01\x01\0rest"),
        Err(WasmError::NotMine { .. })
    ));
    let core = wat::parse_str("(module)").unwrap();
    assert!(matches!(
        rt.load("sha256:core", &core),
        Err(WasmError::CoreModule)
    ));
    let weird = wat::parse_str(
        r#"(component
            (import "wasi:teleport/beam@0.1.0" (instance (export "go" (func))))
        )"#,
    )
    .unwrap();
    let component = rt.load("sha256:weird", &weird).unwrap();
    let log = tempfile::tempfile().unwrap();
    let err = HttpApp::new(
        &rt,
        &component,
        ContainerSpec::default(),
        log,
        Default::default(),
    )
    .err()
    .unwrap();
    match err {
        WasmError::UnsupportedImport { import } => {
            assert!(import.contains("wasi:teleport/beam"), "{import}")
        }
        other => panic!("unexpected {other}"),
    }
}
