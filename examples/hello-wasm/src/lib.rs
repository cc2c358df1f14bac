//! hello-wasm: a `wasi:http/proxy` component.
//!
//! - `GET /` answers `hello from wasm` (or `$GREETING`) and the pod's name if set.
//! - `GET /alloc?mb=N` allocates N MiB (to exercise memory limits).
//! - `GET /spin` never returns (to exercise CPU limits and timeouts).
//! - `GET /env?name=X` answers the environment variable X (404 when unset).
//! - `GET /file?path=P` answers the contents of file P (404 when unreadable).
//! - `GET /write?path=P&data=D` writes D to file P; `GET /rm?path=P` removes it.
//! - `GET /ls?path=D` lists directory D, one name a line.
//! - `GET /fetch?url=http://HOST:PORT/PATH` calls that URL (outgoing
//!   `wasi:http`) and answers what it answered, or 502 with the error.
//! - `GET /healthz?unless=P` answers 200, or 503 while file P exists (so a test
//!   flips a probe by writing P into a shared emptyDir volume: instances are
//!   per request, files are not).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

wasi::http::proxy::export!(Hello);

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    let _ = headers.set(
        &"content-type".to_string(),
        &[b"text/plain; charset=utf-8".to_vec()],
    );
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let body = resp.body().expect("response body");
    ResponseOutparam::set(out, Ok(resp));
    let stream = body.write().expect("body stream");
    for chunk in text.as_bytes().chunks(4096) {
        stream.blocking_write_and_flush(chunk).expect("write body");
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish body");
}

/// GET `url` (plain http) through `wasi:http/outgoing-handler`: status and body.
fn fetch(url: &str) -> Result<(u16, String), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{OutgoingRequest, Scheme};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "bad scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "bad authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "bad path")?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.consume().map_err(|_| "body already taken")?;
    let stream = body.stream().map_err(|_| "body stream already taken")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend(chunk);
    }
    drop(stream);
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The value of query parameter `key`, percent-decoded.
fn param(path: &str, key: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The routes that look at env and files; None when `path` is not one of them.
fn files_and_env(path: &str) -> Option<(u16, String)> {
    let route = path.split('?').next().unwrap_or("");
    let target = || param(path, "path").unwrap_or_default();
    Some(match route {
        "/env" => match std::env::var(param(path, "name").unwrap_or_default()) {
            Ok(v) => (200, v),
            Err(e) => (404, format!("{e}\n")),
        },
        "/file" => match std::fs::read_to_string(target()) {
            Ok(v) => (200, v),
            Err(e) => (404, format!("{}: {e}\n", target())),
        },
        "/write" => match std::fs::write(target(), param(path, "data").unwrap_or_default()) {
            Ok(()) => (200, format!("wrote {}\n", target())),
            Err(e) => (500, format!("{}: {e}\n", target())),
        },
        "/rm" => match std::fs::remove_file(target()) {
            Ok(()) => (200, format!("removed {}\n", target())),
            Err(e) => (404, format!("{}: {e}\n", target())),
        },
        "/ls" => match std::fs::read_dir(target()) {
            Ok(d) => {
                let mut names: Vec<String> = d
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect();
                names.sort();
                (200, names.iter().map(|n| format!("{n}\n")).collect())
            }
            Err(e) => (404, format!("{}: {e}\n", target())),
        },
        "/healthz" => match param(path, "unless") {
            Some(p) if std::fs::metadata(&p).is_ok() => (503, format!("unhealthy: {p} exists\n")),
            _ => (200, "ok\n".to_string()),
        },
        _ => return None,
    })
}

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        println!("request {path}");
        if let Some(q) = path.strip_prefix("/alloc?mb=") {
            let mb: usize = q.parse().unwrap_or(1);
            let mut keep: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mb {
                keep.push(vec![1u8; 1 << 20]);
            }
            let total: usize = keep.iter().map(Vec::len).sum();
            return respond(out, 200, &format!("allocated {} MiB\n", total >> 20));
        }
        if let Some((status, body)) = files_and_env(&path) {
            return respond(out, status, &body);
        }
        if path.starts_with("/fetch?") {
            let url = param(&path, "url").unwrap_or_default();
            return match fetch(&url) {
                Ok((status, body)) => respond(out, status, &body),
                Err(e) => respond(out, 502, &format!("fetch {url}: {e}\n")),
            };
        }
        if path == "/spin" {
            let mut x: u64 = 0;
            loop {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if x == 42 {
                    break;
                }
            }
            return respond(out, 200, "unreachable\n");
        }
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello from wasm".into());
        respond(out, 200, &format!("{greeting}\n"));
    }
}
