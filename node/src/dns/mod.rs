//! Cluster DNS embedded in the node agent: [`ClusterDns`] holds the current
//! [`Records`] snapshot and serves it over UDP and TCP with `hickory-server`.
//!
//! Names outside the cluster domain go to the node's upstream resolvers
//! ([`forward`]: the host's `resolv.conf` by default), with answers cached
//! by TTL; with no upstream they are REFUSED. ExternalName Services are
//! answered with a CNAME that is not chased. A snapshot is swapped whole by
//! [`ClusterDns::update`], so a query sees either the old or the new names.
//!
//! **Cluster names are answered from the snapshot alone: nothing upstream
//! (slow, down, lying) changes or delays them.**

pub mod forward;
pub mod pod;
mod records;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

pub use records::{DEFAULT_DOMAIN, Lookup, Records, TTL};

/// How long an idle TCP connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Errors of the cluster DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("bind dns udp socket on {addr}")]
    BindUdp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bind dns tcp listener on {addr}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("dns server on {addr} stopped")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: NetError,
    },
}

/// The cluster DNS server: a shared, atomically swapped [`Records`] snapshot.
/// Clones share the snapshot.
#[derive(Clone)]
pub struct ClusterDns {
    records: Arc<RwLock<Arc<Records>>>,
    /// Where names outside the cluster domain go (none: REFUSED).
    forward: Option<Arc<forward::Forwarder>>,
}

impl ClusterDns {
    /// A server for `domain` (e.g. `cluster.local`) with no Services yet.
    pub fn new(domain: &str) -> ClusterDns {
        ClusterDns {
            records: Arc::new(RwLock::new(Arc::new(Records::build(domain, &[], &[])))),
            forward: None,
        }
    }

    /// Forward names outside the cluster domain to `upstreams` (none: keep
    /// refusing them).
    pub fn forwarding_to(mut self, upstreams: Vec<SocketAddr>) -> ClusterDns {
        self.forward =
            (!upstreams.is_empty()).then(|| Arc::new(forward::Forwarder::new(upstreams)));
        self
    }

    /// Swap the snapshot served; queries in flight finish on the old one.
    pub fn update(&self, records: Records) {
        let records = Arc::new(records);
        *self.records.write().unwrap_or_else(PoisonError::into_inner) = records;
    }

    /// The snapshot served now.
    pub fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serve UDP and TCP on `addr` until the future is dropped (which stops
    /// both listeners and every query in flight).
    pub async fn serve(self, addr: SocketAddr) -> Result<(), DnsError> {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::BindUdp { addr, source })?;
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| DnsError::BindTcp { addr, source })?;
        tracing::info!(%addr, domain = %self.records().domain(), "cluster dns serving");
        let mut server = Server::new(Handler { dns: self });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        server
            .block_until_done()
            .await
            .map_err(|source| DnsError::Serve { addr, source })
    }
}

/// Answers each request from the snapshot current when it arrives.
struct Handler {
    dns: ClusterDns,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let records = self.dns.records();

        let mut response_edns = None;
        if let Some(request_edns) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_version(0);
            response_edns = Some((edns, request_edns.version()));
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some((edns, _)) = &response_edns {
            builder.edns(edns);
        }

        let mut metadata = Metadata::response_from_request(&request.metadata);
        let mut answers: Vec<Record> = Vec::new();
        let mut authorities: Vec<Record> = Vec::new();
        let mut additionals: Vec<Record> = Vec::new();
        let mut soa: Option<Record> = None;

        let code = if response_edns
            .as_ref()
            .is_some_and(|(_, version)| *version > 0)
        {
            ResponseCode::BADVERS
        } else if request.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else {
            match request.request_info() {
                Err(error) => {
                    tracing::debug!(src = %request.src(), %error, "dns: malformed query");
                    ResponseCode::FormErr
                }
                Ok(info) if info.query.query_class() != DNSClass::IN => ResponseCode::Refused,
                Ok(info) => {
                    let query = info.query.original();
                    match records.lookup(query.name(), query.query_type()) {
                        Lookup::Answer {
                            answers: found,
                            additionals: extra,
                        } => {
                            metadata.authoritative = true;
                            answers = found;
                            additionals = extra;
                            ResponseCode::NoError
                        }
                        Lookup::NoData => {
                            metadata.authoritative = true;
                            soa = Some(records.soa().clone());
                            ResponseCode::NoError
                        }
                        Lookup::NxDomain => {
                            metadata.authoritative = true;
                            soa = Some(records.soa().clone());
                            ResponseCode::NXDomain
                        }
                        Lookup::Refused => match &self.dns.forward {
                            Some(f) => {
                                let a = f.resolve(query).await;
                                metadata.recursion_available = true;
                                answers = a.answers;
                                authorities = a.authorities;
                                additionals = a.additionals;
                                a.code
                            }
                            None => ResponseCode::Refused,
                        },
                    }
                }
            }
        };
        metadata.response_code = code;

        let response = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            soa.iter(),
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(src = %request.src(), %error, "dns: sending response failed");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::{Name, RData, RecordType};
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message
    }

    /// One query over UDP, retried while the server starts.
    async fn ask_udp(server: SocketAddr, message: &Message) -> Message {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bytes = message.to_vec().unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..50 {
            socket.send_to(&bytes, server).await.unwrap();
            if let Ok(Ok((len, _))) =
                timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
            {
                return Message::from_vec(&buf[..len]).unwrap();
            }
        }
        panic!("no udp answer from {server}");
    }

    /// One query over TCP (two-byte length prefix), retried while the server
    /// starts.
    async fn ask_tcp(server: SocketAddr, message: &Message) -> Message {
        let mut stream = None;
        for _ in 0..50 {
            match TcpStream::connect(server).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let mut stream = stream.expect("tcp connect");
        let bytes = message.to_vec().unwrap();
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        stream.write_all(&len).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut len = [0u8; 2];
        timeout(Duration::from_secs(5), stream.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.unwrap();
        Message::from_vec(&body).unwrap()
    }

    /// A loopback port free for both UDP and TCP (the server binds both).
    fn free_port() -> SocketAddr {
        loop {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = tcp.local_addr().unwrap();
            if std::net::UdpSocket::bind(addr).is_ok() {
                return addr;
            }
        }
    }

    fn web_service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn a_answers(response: &Message) -> Vec<String> {
        response
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.to_string()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn serves_udp_and_tcp_on_loopback() {
        let dns = ClusterDns::new("cluster.local");
        let addr = free_port();
        let server = tokio::spawn(dns.clone().serve(addr));

        // Before the update: the name does not exist.
        let response = ask_udp(
            addr,
            &query("web.default.svc.cluster.local.", RecordType::A),
        )
        .await;
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);

        dns.update(Records::build("cluster.local", &[web_service()], &[]));

        let asked = query("web.default.svc.cluster.local.", RecordType::A);
        for response in [ask_udp(addr, &asked).await, ask_tcp(addr, &asked).await] {
            assert_eq!(response.metadata.id, asked.metadata.id);
            assert_eq!(response.metadata.response_code, ResponseCode::NoError);
            assert!(response.metadata.authoritative);
            assert!(!response.metadata.recursion_available);
            assert_eq!(a_answers(&response), ["10.96.0.10"]);
            assert_eq!(response.answers[0].ttl, TTL);
        }

        let missing = query("nope.default.svc.cluster.local.", RecordType::A);
        for response in [ask_udp(addr, &missing).await, ask_tcp(addr, &missing).await] {
            assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
            assert!(response.answers.is_empty());
            assert_eq!(response.authorities.len(), 1);
            assert_eq!(response.authorities[0].record_type(), RecordType::SOA);
        }

        let nodata = query("web.default.svc.cluster.local.", RecordType::AAAA);
        let response = ask_udp(addr, &nodata).await;
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());

        let outside = query("example.com.", RecordType::A);
        let response = ask_udp(addr, &outside).await;
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        assert!(response.answers.is_empty());

        // Garbage is ignored, and the server keeps answering.
        let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        junk.send_to(b"\x01\x02\x03", addr).await.unwrap();
        junk.send_to(&[0xffu8; 40], addr).await.unwrap();
        let response = ask_udp(addr, &asked).await;
        assert_eq!(a_answers(&response), ["10.96.0.10"]);

        assert!(!server.is_finished());
        server.abort();
    }

    /// A fake upstream on loopback: answers A queries for `name` with
    /// 192.0.2.7 (TTL 60) and NXDOMAIN otherwise; counts the queries.
    async fn upstream(
        name: &'static str,
    ) -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = q.clone();
                r.metadata.message_type = hickory_server::proto::op::MessageType::Response;
                let asked = q.queries[0].name().to_ascii();
                if asked == name {
                    r.answers.push(Record::from_rdata(
                        q.queries[0].name().clone(),
                        60,
                        RData::A("192.0.2.7".parse().unwrap()),
                    ));
                } else {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                sock.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        (addr, count, task)
    }

    #[tokio::test]
    async fn names_outside_the_cluster_are_forwarded_and_cached() {
        let (up, asked, task) = upstream("svc.test.example.").await;
        let dns = ClusterDns::new("cluster.local").forwarding_to(vec![up]);
        dns.update(Records::build("cluster.local", &[web_service()], &[]));
        let addr = free_port();
        let server = tokio::spawn(dns.clone().serve(addr));

        let q = query("svc.test.example.", RecordType::A);
        let first = ask_udp(addr, &q).await;
        assert_eq!(first.metadata.response_code, ResponseCode::NoError);
        assert!(first.metadata.recursion_available && !first.metadata.authoritative);
        assert_eq!(a_answers(&first), ["192.0.2.7"]);
        let second = ask_udp(addr, &q).await;
        assert_eq!(a_answers(&second), ["192.0.2.7"]);
        assert!(second.answers[0].ttl <= 60);
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the second came from the cache"
        );
        let nx = ask_udp(addr, &query("nope.test.example.", RecordType::A)).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

        // Upstream gone: cluster names answer at once, cached names still
        // answer, new names fail (SERVFAIL), never hang.
        task.abort();
        let _ = task.await;
        let t = std::time::Instant::now();
        let cluster = ask_udp(
            addr,
            &query("web.default.svc.cluster.local.", RecordType::A),
        )
        .await;
        assert_eq!(a_answers(&cluster), ["10.96.0.10"]);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(a_answers(&ask_udp(addr, &q).await), ["192.0.2.7"]);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = query("other.test.example.", RecordType::A);
        socket
            .send_to(&other.to_vec().unwrap(), addr)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within the upstream timeout")
            .unwrap();
        let failed = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
        server.abort();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = ClusterDns::new("cluster.local")
            .serve(addr)
            .await
            .unwrap_err();
        assert!(matches!(error, DnsError::BindUdp { .. }));
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
