//! A WebSocket echo server: every text or binary message comes back as it
//! was sent; the upgrade request's path and `X-Forwarded-*` headers are sent
//! first as a text message (so a test sees what the router forwarded).

use std::net::TcpListener;

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut seen = String::new();
            let cb = |req: &tungstenite::handshake::server::Request,
                      resp: tungstenite::handshake::server::Response| {
                seen = format!("path={}", req.uri().path());
                for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
                    if let Some(v) = req.headers().get(h).and_then(|v| v.to_str().ok()) {
                        seen.push_str(&format!(" {h}={v}"));
                    }
                }
                Ok(resp)
            };
            let Ok(mut ws) = tungstenite::accept_hdr(stream, cb) else {
                return;
            };
            if ws.send(tungstenite::Message::text(seen)).is_err() {
                return;
            }
            while let Ok(msg) = ws.read() {
                match msg {
                    m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)) => {
                        if ws.send(m).is_err() {
                            return;
                        }
                    }
                    tungstenite::Message::Close(_) => return,
                    _ => {}
                }
            }
        });
    }
}
