//! hello-wasm: a `wasi:http/proxy` component.
//!
//! - `GET /` answers `hello from wasm` (or `$GREETING`) and the pod's name if set.
//! - `GET /alloc?mb=N` allocates N MiB (to exercise memory limits).
//! - `GET /spin` never returns (to exercise CPU limits and timeouts).

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
