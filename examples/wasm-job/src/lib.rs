//! wasm-job: a `wasi:cli/command` component.
//!
//! Prints a greeting, its arguments and `$JOB_NAME`, writes a line to stderr, then
//! exits with the code given as `--exit N` (default 0). `--alloc-mb N` allocates
//! N MiB first; `--sleep-ms N` sleeps N milliseconds; `--spin` loops forever;
//! `--write PATH TEXT` writes TEXT to the file PATH (exit 2 when it cannot);
//! `--expect-file PATH` exits 4 unless the file exists; `--cat PATH` prints
//! the file (exit 4 when it cannot be read); `--env NAME` prints `NAME=value`.
//!
//! It exports `wasi:cli/run` through bindings that `wit-bindgen` generates from
//! the repository's `wit/` (world `skiff:pods/command-pod`, which is
//! `wasi:cli/command`); arguments, environment, files and exit go through std.

wit_bindgen::generate!({
    path: "../../wit",
    world: "skiff:pods/command-pod",
    generate_all,
});

struct Job;

export!(Job);

impl exports::wasi::cli::run::Guest for Job {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let name = std::env::var("JOB_NAME").unwrap_or_else(|_| "wasm-job".into());
        println!("hello from {name}");
        println!("args: {}", args.join(" "));
        eprintln!("this line goes to stderr");
        let mut code = 0;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--exit" => code = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
                "--alloc-mb" => {
                    let mb: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    for _ in 0..mb {
                        keep.push(vec![1u8; 1 << 20]);
                    }
                    println!("allocated {} MiB", keep.len());
                }
                "--write" => {
                    let (path, text) = (it.next().cloned().unwrap_or_default(), it.next().cloned().unwrap_or_default());
                    match std::fs::write(&path, &text) {
                        Ok(()) => println!("wrote {path}"),
                        Err(e) => {
                            eprintln!("write {path}: {e}");
                            std::process::exit(2);
                        }
                    }
                }
                "--expect-file" => {
                    let path = it.next().cloned().unwrap_or_default();
                    if std::fs::metadata(&path).is_err() {
                        eprintln!("{path} does not exist");
                        std::process::exit(4);
                    }
                }
                "--cat" => {
                    let path = it.next().cloned().unwrap_or_default();
                    match std::fs::read_to_string(&path) {
                        Ok(text) => println!("{path}: {text}"),
                        Err(e) => {
                            eprintln!("read {path}: {e}");
                            std::process::exit(4);
                        }
                    }
                }
                "--env" => {
                    let name = it.next().cloned().unwrap_or_default();
                    println!("{name}={}", std::env::var(&name).unwrap_or_default());
                }
                "--sleep-ms" => {
                    let ms: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                "--spin" => {
                    let mut x: u64 = 1;
                    while x != 0 {
                        x = x.wrapping_mul(3).wrapping_add(1) | 1;
                    }
                }
                _ => {}
            }
        }
        std::process::exit(code);
    }
}
