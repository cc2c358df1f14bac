//! `https-fetch URL`: GET an `https://` URL and print the body. Trusts only
//! the certificates in the PEM file `SSL_CERT_FILE` names (as OpenSSL-based
//! clients read it); the host name resolves as the container's
//! `/etc/resolv.conf` says (musl's resolver). Exits 1 with the reason on
//! any failure, a refused certificate included.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

fn fetch(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").ok_or("only https:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "bad port")?),
        None => (authority, 443),
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(file) = std::env::var("SSL_CERT_FILE") {
        let pem = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{file}: {e}"))?;
            roots.add(cert).map_err(|e| format!("{file}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("TLS with {authority}: {e}"))?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // Servers that close without close_notify: what came is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(format!("TLS with {authority}: {e}")),
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with('2') {
        return Err(format!("HTTP {status}"));
    }
    Ok(body.to_string())
}

fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: https-fetch https://HOST[:PORT]/PATH");
        std::process::exit(2);
    };
    match fetch(&url) {
        Ok(body) => print!("{body}"),
        Err(e) => {
            eprintln!("https-fetch: {e}");
            std::process::exit(1);
        }
    }
}
