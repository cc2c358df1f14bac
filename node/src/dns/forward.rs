//! Forwarding of names outside the cluster domain to the node's upstream
//! resolvers (from a `resolv.conf`, the host's by default), as CoreDNS's
//! `forward` and `cache` plugins do for a cluster: each query goes to the
//! upstreams in turn over UDP (TCP when the answer is truncated), and
//! answers are kept by their TTL (negative ones by the SOA's minimum),
//! served with their TTLs counted down.
//!
//! **Upstream trouble never touches cluster names (they are answered before
//! any forwarding), and an upstream that does not answer costs a query at
//! most [`TIMEOUT`] per server before SERVFAIL.**

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Longest wait for one upstream's answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an answer is kept, whatever its TTL.
const MAX_TTL: u32 = 3600;
/// Longest a negative answer (NXDOMAIN, no data) is kept.
const MAX_NEGATIVE_TTL: u32 = 300;
/// Answers kept at most (the oldest go first beyond it).
const MAX_ENTRIES: usize = 10_000;

/// The upstream resolvers of a `resolv.conf` (`nameserver` lines, port 53).
pub fn upstreams_of(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Read `path`'s upstreams (none when it cannot be read).
pub fn upstreams_in(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => upstreams_of(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the upstream resolvers");
            Vec::new()
        }
    }
}

/// An answer from upstream, as kept.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

struct Kept {
    answer: Answer,
    at: Instant,
    ttl: u32,
}

/// The forwarder: upstreams and the cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<(String, u16), Kept>>,
}

/// How long an answer may be kept: the least TTL of its records (the SOA's
/// minimum for a negative one), capped; `None` for what is not kept
/// (failures, truncated answers).
fn keep_for(a: &Answer) -> Option<u32> {
    match a.code {
        ResponseCode::NoError if !a.answers.is_empty() => a
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|t| t.min(MAX_TTL)),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = a.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            });
            Some(soa.unwrap_or(30).min(MAX_NEGATIVE_TTL))
        }
        _ => None,
    }
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::default(),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    fn cached(&self, key: &(String, u16)) -> Option<Answer> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let kept = cache.get(key)?;
        let age = u32::try_from(kept.at.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= kept.ttl {
            cache.remove(key);
            return None;
        }
        let mut a = kept.answer.clone();
        for r in a
            .answers
            .iter_mut()
            .chain(a.authorities.iter_mut())
            .chain(a.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(a)
    }

    fn keep(&self, key: (String, u16), answer: &Answer) {
        let Some(ttl) = keep_for(answer).filter(|t| *t > 0) else {
            return;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, k| now.duration_since(k.at).as_secs() < u64::from(k.ttl));
            if cache.len() >= MAX_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, k)| k.at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Kept {
                answer: answer.clone(),
                at: Instant::now(),
                ttl,
            },
        );
    }

    /// Answer `query` from the cache or the upstreams; SERVFAIL when none
    /// answers.
    pub async fn resolve(&self, query: &Query) -> Answer {
        let key = (
            query.name().to_lowercase().to_ascii(),
            u16::from(query.query_type()),
        );
        if let Some(a) = self.cached(&key) {
            return a;
        }
        for up in &self.upstreams {
            match ask(*up, query).await {
                Ok(a) => {
                    self.keep(key, &a);
                    return a;
                }
                Err(e) => tracing::debug!(upstream = %up, error = %e, "dns: upstream failed"),
            }
        }
        Answer {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// One query to one upstream: UDP, then TCP when the answer was truncated.
async fn ask(up: SocketAddr, query: &Query) -> std::io::Result<Answer> {
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(query.clone());
    let bytes = m.to_vec().map_err(std::io::Error::other)?;
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let reply = tokio::time::timeout(TIMEOUT, async {
        loop {
            let n = sock.recv(&mut buf).await?;
            // Anything but the answer to this query (a late answer to an
            // earlier one, a forgery) is ignored.
            if let Ok(r) = Message::from_vec(&buf[..n])
                && r.metadata.id == m.metadata.id
                && r.queries.first() == Some(query)
            {
                return Ok::<_, std::io::Error>(r);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let reply = if reply.metadata.truncation {
        tokio::time::timeout(TIMEOUT, ask_tcp(up, &bytes, m.metadata.id))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer over TCP")
            })??
    } else {
        reply
    };
    Ok(Answer {
        code: reply.metadata.response_code,
        answers: reply.answers,
        authorities: reply.authorities,
        additionals: reply
            .additionals
            .into_iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .collect(),
    })
}

async fn ask_tcp(up: SocketAddr, bytes: &[u8], id: u16) -> std::io::Result<Message> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(bytes).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).await?;
    let r = Message::from_vec(&body).map_err(std::io::Error::other)?;
    if r.metadata.id != id {
        return Err(std::io::Error::other("an answer to another query"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_nameserver_lines() {
        let text = "# a comment\nsearch example.org\nnameserver 10.1.2.3\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:2\n";
        assert_eq!(
            upstreams_of(text),
            vec![
                "10.1.2.3:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(upstreams_of("").is_empty());
    }
}
