//! `skiff server`: open the data dir, start (or join) the Raft group, write the
//! join token and kubeconfig, and serve the API until stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod certs;
mod keys;

use crate::api::tls;
use crate::api::{self, ApiState, JoinRequest, JoinResponse};
use crate::pki::{self, ClusterCa};
use crate::store::{ConflictKind, Op, PeerTls, ReplicaConfig, Store, StoreConfig, StoreError};

/// Settings of one server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_addr: String,
    pub peer_addr: String,
    pub join: Option<String>,
    pub token: Option<String>,
    pub replica: ReplicaConfig,
    /// The cluster CIDR and the block size each node gets.
    pub pod_cidrs: crate::controllers::nodeipam::PodCidrs,
    /// How long a node's Lease may go unrenewed before it is NotReady.
    pub node_grace: std::time::Duration,
    /// The Service CIDR (ClusterIPs) and the NodePort range.
    pub services: crate::storage::ServiceRanges,
    /// How often HorizontalPodAutoscalers are evaluated.
    pub hpa_sync_period: std::time::Duration,
    /// Scheduled snapshots of this server's store (`--snapshot-schedule`).
    pub snapshots: Option<crate::store::backup::Schedule>,
    /// More names and addresses the serving certificate covers (`--tls-san`).
    pub tls_san: Vec<String>,
    /// This host's address: covered by the certificate and, when `api_addr`
    /// is unspecified (`0.0.0.0:6443`), the address clients are given.
    pub node_ip: Option<std::net::IpAddr>,
    /// The audit log.
    pub audit: AuditConfig,
    /// Serve the raw key-value view `/skiff/v0/kv` (debugging; join token).
    pub debug_kv: bool,
    /// How long the serving and peer certificates this server issues are
    /// valid (renewed at two thirds).
    pub cert_lifetime: Duration,
    /// Kubernetes' `EncryptionConfiguration` for values at rest (none: the
    /// cluster-managed keys, `skiff secrets rotate-key`).
    pub encryption_config: Option<PathBuf>,
    /// The Pod Security levels of namespaces without labels.
    pub pod_security: crate::podsecurity::Policy,
}

/// Where the audit log goes and what it records.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    /// The log file (`-`: standard output; none: `<data-dir>/audit/audit.log`).
    pub path: Option<PathBuf>,
    /// An audit Policy file (none: Metadata for every request).
    pub policy: Option<PathBuf>,
    /// Rotate at this size.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub backups: usize,
}

/// The address clients are given for an API listening on `api_addr`: itself,
/// or with an unspecified IP (`0.0.0.0`, `::`) `node_ip`, else loopback.
pub fn advertised_addr(api_addr: &str, node_ip: Option<std::net::IpAddr>) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    match api_addr.parse::<SocketAddr>() {
        Ok(sa) if sa.ip().is_unspecified() => {
            let ip = node_ip
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or(match sa {
                    SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            SocketAddr::new(ip, sa.port()).to_string()
        }
        _ => api_addr.to_string(),
    }
}

/// Where agents read the cluster's network settings.
pub const CLUSTER_CONFIG: (&str, &str) = ("kube-system", "skiff-cluster");

/// Errors that stop a server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("--join needs --token (the join-token of an existing server)")]
    TokenRequired,
    #[error("bind api address {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("join {url}: {reason}")]
    Join { url: String, reason: String },
    #[error("store stopped: {0}")]
    Stopped(String),
    #[error("certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("cluster bootstrap: {0}")]
    Bootstrap(String),
}

fn file_err(path: &Path, reason: impl ToString) -> ServerError {
    ServerError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    skiff_common::fs::write_private(path, contents.as_bytes()).map_err(|(p, e)| file_err(&p, e))
}

/// The cluster token: given, stored in the data dir, or new (first server only).
fn cluster_token(cfg: &ServerConfig) -> Result<String, ServerError> {
    let path = cfg.data_dir.join("join-token");
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => {
            let t = s.trim().to_string();
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(file_err(&path, "join token is empty or malformed"));
            }
            Some(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_err(&path, e)),
    };
    let token = match (&cfg.token, stored, &cfg.join) {
        (Some(t), _, _) => {
            skiff_common::jointoken::JoinToken::parse(t)
                .map_err(|e| ServerError::Join {
                    url: cfg.join.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })?
                .secret
        }
        (None, Some(t), _) => t,
        (None, None, Some(_)) => return Err(ServerError::TokenRequired),
        (None, None, None) => {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..40)
                .map(|_| {
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                })
                .collect()
        }
    };
    write_private(&path, &format!("{token}\n"))?;
    Ok(token)
}

fn kubeconfig(api_addr: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://{api_addr}\n    certificate-authority-data: {ca}\n\
         users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\n\
         current-context: skiff\n"
    )
}

const CA_KEY: &str = "/skiff/cluster/ca";
const ADMIN_TOKEN_KEY: &str = "/skiff/cluster/admin-token";
const SIGNING_KEY: &str = "/skiff/cluster/serviceaccount-signing-key";

/// The ServiceAccount token signer of the cluster: its key is made by
/// whichever server asks first (clusters made before it included) and
/// shared through the store.
pub(crate) async fn account_tokens(
    store: &Store,
    objects: &crate::storage::Objects,
) -> Result<crate::auth::authn::AccountTokens, ServerError> {
    use crate::auth::tokens::{Signer, SigningKeyPem};
    let fresh = SigningKeyPem::generate().map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    let stored = cluster_value(
        store,
        &objects.encryption,
        SIGNING_KEY,
        Some(serde_json::to_vec(&fresh).expect("json")),
    )
    .await?;
    let key: SigningKeyPem = serde_json::from_slice(&stored)
        .map_err(|e| ServerError::Bootstrap(format!("stored signing key: {e}")))?;
    Ok(crate::auth::authn::AccountTokens {
        signer: Signer::new(&key).map_err(|e| ServerError::Bootstrap(e.to_string()))?,
        lookup: std::sync::Arc::new(objects.clone()),
    })
}

pub(crate) fn random_token(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// Read a cluster-wide secret from the store, creating it first if `create`
/// is given and it is absent (the first server does that; others find it
/// replicated). It is stored sealed with the cluster's first encryption key.
async fn cluster_value(
    store: &Store,
    enc: &crate::storage::Encryption,
    key: &str,
    create: Option<Vec<u8>>,
) -> Result<Vec<u8>, ServerError> {
    let sealed = create.map(|v| enc.get().seal_internal(key, v));
    let stored = raw_cluster_value(store, key, sealed).await?;
    enc.open(key, &stored)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| ServerError::Bootstrap(e.to_string()))
}

/// A cluster-wide value as stored, created if absent and `create` is given.
async fn raw_cluster_value(
    store: &Store,
    key: &str,
    create: Option<Vec<u8>>,
) -> Result<Vec<u8>, ServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            if let Some(kv) = store.get(key).await? {
                return Ok::<_, StoreError>(Some(kv.value));
            }
            if let Some(v) = &create {
                match store.write(Op::create(key, v.clone())).await {
                    Ok(_) => return Ok(Some(v.clone())),
                    Err(StoreError::Conflict {
                        kind: ConflictKind::AlreadyExists,
                        ..
                    }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        };
        match attempt.await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => tracing::debug!(key, error = %e, "cluster value not ready"),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ServerError::Bootstrap(format!(
                "{key} did not become available"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create objects every cluster has, unless they exist.
async fn ensure_objects(
    state: &ApiState,
    api_version: &str,
    kind: &str,
    objs: Vec<serde_json::Value>,
) {
    let objects = &state.rest.objects;
    let Some(t) = objects.registry.by_kind(api_version, kind).cloned() else {
        return;
    };
    let wo = crate::storage::WriteOptions::internal("skiff");
    for obj in objs {
        let name = obj.pointer("/metadata/name").cloned().unwrap_or_default();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        match objects.create(&t, ns.as_deref(), obj, &wo).await {
            Ok(_) => tracing::info!(kind, %name, "created"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => tracing::warn!(kind, %name, error = %e.message, "cannot create"),
        }
    }
}

/// Namespaces, RuntimeClasses (`wasm` with handler `wasmtime`, `runc`), the
/// IngressClass `skiff` (the default), the network settings agents read (ConfigMap `kube-system/skiff-cluster`) and
/// the default ClusterRoles and bindings every cluster has. The first
/// server's settings stay.
pub(crate) async fn ensure_defaults(
    state: &ApiState,
    pod_cidrs: &crate::controllers::nodeipam::PodCidrs,
    services: &crate::storage::ServiceRanges,
) {
    let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|ns| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .collect();
    ensure_objects(state, "v1", "Namespace", namespaces).await;
    let classes = [("wasm", "wasmtime"), ("runc", "runc")]
        .iter()
        .map(|(name, handler)| serde_json::json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}))
        .collect();
    ensure_objects(state, "node.k8s.io/v1", "RuntimeClass", classes).await;
    // The PriorityClasses every Kubernetes cluster has (charts name them).
    let priorities = [
        ("system-cluster-critical", 2_000_000_000),
        ("system-node-critical", 2_000_001_000),
    ]
    .iter()
    .map(|(name, value)| {
        serde_json::json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value,
            "description": "Used for system critical pods that must run in the cluster."})
    })
    .collect();
    ensure_objects(state, "scheduling.k8s.io/v1", "PriorityClass", priorities).await;
    // Every node's Ingress router serves this class, the default one.
    let ingress_class = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": skiff_common::ingress::CLASS, "annotations": {skiff_common::ingress::DEFAULT_CLASS: "true"}},
        "spec": {"controller": skiff_common::ingress::CONTROLLER}});
    ensure_objects(
        state,
        "networking.k8s.io/v1",
        "IngressClass",
        vec![ingress_class],
    )
    .await;
    let (ns, name) = CLUSTER_CONFIG;
    let config = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"clusterCIDR": pod_cidrs.cluster(), "serviceCIDR": services.cidr()}});
    ensure_objects(state, "v1", "ConfigMap", vec![config]).await;
    ensure_api_service(state, services).await;
    use crate::auth::defaults;
    let rbac = "rbac.authorization.k8s.io/v1";
    ensure_objects(state, rbac, "ClusterRole", defaults::cluster_roles()).await;
    ensure_objects(
        state,
        rbac,
        "ClusterRoleBinding",
        defaults::cluster_role_bindings(),
    )
    .await;
}

/// The `kubernetes` Service in `default`: HTTPS on 443 at the first address
/// of the Service range. Every node's proxy sends it to its agent's API
/// relay, which forwards to the API servers. (A cluster made before this
/// Service existed may have lent that address out: then it gets another.)
async fn ensure_api_service(state: &ApiState, services: &crate::storage::ServiceRanges) {
    let svc = |ip: Option<String>| {
        let mut v = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
        if let Some(ip) = ip {
            v["spec"]["clusterIP"] = serde_json::json!(ip);
            v["spec"]["clusterIPs"] = serde_json::json!([ip]);
        }
        v
    };
    let objects = &state.rest.objects;
    let Some(t) = objects.registry.by_kind("v1", "Service").cloned() else {
        return;
    };
    let wo = crate::storage::WriteOptions::internal("skiff");
    let first = objects
        .create(
            &t,
            Some("default"),
            svc(Some(services.api_ip().to_string())),
            &wo,
        )
        .await;
    match first {
        Ok(_) => tracing::info!("created the kubernetes Service"),
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => {
            tracing::warn!(error = %e.message, "the first Service address is taken; the kubernetes Service gets another");
            ensure_objects(state, "v1", "Service", vec![svc(None)]).await;
        }
    }
}

/// Where agents learn every API server of the cluster: ConfigMap
/// `kube-system/skiff-apiservers`, one `server-<id>: HOST:PORT` entry per server.
pub const APISERVERS: (&str, &str) = ("kube-system", "skiff-apiservers");

/// Publish this server's API address among the cluster's API servers (retried
/// until the store takes it, as the ConfigMap may be written by several
/// servers at once).
async fn publish_apiserver(state: &ApiState, id: u64, addr: &str) {
    let objects = &state.rest.objects;
    let Some(t) = objects.registry.by_kind("v1", "ConfigMap").cloned() else {
        return;
    };
    let (ns, name) = APISERVERS;
    let key = format!("server-{id:x}");
    let wo = crate::storage::WriteOptions::internal("skiff");
    for _ in 0..50 {
        let result = match objects.get(&t, Some(ns), name).await {
            Ok(mut cm) => {
                if cm.pointer(&format!("/data/{key}")).and_then(|v| v.as_str()) == Some(addr) {
                    return;
                }
                cm["data"][&key] = serde_json::json!(addr);
                objects.update(&t, Some(ns), name, cm, None, &wo).await
            }
            Err(e) if e.reason == "NotFound" => {
                let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns}, "data": {&key: addr}});
                objects.create(&t, Some(ns), cm, &wo).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                tracing::info!(%addr, "published the api address for agents");
                return;
            }
            Err(e) => tracing::debug!(error = %e.message, "cannot publish the api address yet"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn join(
    url: &str,
    token: &str,
    pin: &str,
    body: &JoinRequest,
) -> Result<JoinResponse, ServerError> {
    let endpoint = format!("{}/skiff/v0/join", url.trim_end_matches('/'));
    let failed = |reason: String| ServerError::Join {
        url: url.into(),
        reason,
    };
    // A token that pins the CA has the server prove its CA before the
    // secret is sent; a bare one cannot check the server.
    let pin = skiff_common::jointoken::JoinToken::parse(pin).map_err(|e| failed(e.to_string()))?;
    let authority = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let mut ca = None;
    for attempt in 0..30 {
        match pin.fetch_ca(&authority).await {
            Ok(got) => {
                ca = got;
                break;
            }
            Err(e) if e.is_final() || attempt == 29 => return Err(failed(e.to_string())),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    let builder = match &ca {
        Some(pem) => builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| failed(e.to_string()))?,
        ),
        None => {
            tracing::warn!(
                url,
                "the join token pins no CA: the server is not verified (use the K10 token from its node-token file)"
            );
            builder.danger_accept_invalid_certs(true)
        }
    };
    let client = builder.build().map_err(|e| failed(e.to_string()))?;
    let mut last = String::new();
    for attempt in 0..30 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let res = client
            .post(&endpoint)
            .bearer_auth(token)
            .json(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                return r.json().await.map_err(|e| ServerError::Join {
                    url: url.into(),
                    reason: e.to_string(),
                });
            }
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                return Err(ServerError::Join {
                    url: url.into(),
                    reason: "the server refused the token".into(),
                });
            }
            Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(attempt, error = %last, "join attempt failed; retrying");
    }
    Err(ServerError::Join {
        url: url.into(),
        reason: last,
    })
}

/// Start everything and serve until a shutdown signal or a fatal store error.
pub async fn run(mut cfg: ServerConfig) -> Result<(), ServerError> {
    tls::raise_fd_limit();
    // Paths reach other programs (containerd, runc, kubeconfig readers) that
    // run in other directories: resolve the data dir once, here.
    cfg.data_dir = std::path::absolute(&cfg.data_dir).map_err(|e| file_err(&cfg.data_dir, e))?;
    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        return Err(file_err(&cfg.data_dir, "data dir is not a directory"));
    }
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| file_err(&cfg.data_dir, e))?;
    {
        // The store, keys and tokens inside are the cluster's: owner only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| file_err(&cfg.data_dir, e))?;
    }
    // Before anything in the data dir is written: refuse a newer format.
    crate::store::format::ensure(&cfg.data_dir)?;
    let token = cluster_token(&cfg)?;
    let fresh_id = loop {
        let id: u64 = rand::random::<u64>() >> 1;
        if id != 0 {
            break id;
        }
    };
    let peer_tls = PeerTls::default();
    let store = Store::start(
        StoreConfig {
            data_dir: cfg.data_dir.clone(),
            peer_addr: cfg.peer_addr.clone(),
            peer_tls: peer_tls.clone(),
            bootstrap: cfg.join.is_none(),
            tick: Duration::from_millis(100),
            replica: cfg.replica.clone(),
        },
        fresh_id,
    )
    .await?;
    let id = store.id();
    tracing::info!(node_id = id, data_dir = %cfg.data_dir.display(), peer_addr = %cfg.peer_addr, "store started");
    // The peer port talks mutual TLS: this member's certificate is stored,
    // or (a data dir from before peer certificates) issued with the CA in
    // this replica, or comes with the join, or (a new cluster) is issued
    // once the CA exists.
    let encryption = crate::storage::Encryption::default();
    let managed = keys::load(
        cfg.encryption_config.as_deref(),
        &token,
        &store,
        &encryption,
    )?;
    let mut peer = certs::PeerIdentity::load(&cfg.data_dir, id, peer_tls)?;
    if !peer.is_set()
        && let Some(kv) = store.get_local(CA_KEY)?
    {
        let json = encryption
            .open(CA_KEY, &kv.value)
            .map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        let ca: ClusterCa = serde_json::from_slice(&json)
            .map_err(|e| ServerError::Bootstrap(format!("stored cluster ca: {e}")))?;
        peer.issue(&cfg.data_dir, &ca, id, cfg.cert_lifetime)?;
    }
    if let Some(url) = &cfg.join
        && store.status().voters.is_empty()
    {
        let pin = cfg.token.as_deref().unwrap_or(&token);
        let (key_pem, peer_csr) = pki::signing_request(&format!("skiff-peer-{id:x}"))?;
        let body = JoinRequest {
            node_id: id,
            peer_addr: cfg.peer_addr.clone(),
            peer_csr,
        };
        let resp = join(url, &token, pin, &body).await?;
        let issued = pki::Issued {
            chain_pem: resp.peer_cert,
            key_pem,
        };
        peer.adopt(&cfg.data_dir, &resp.ca_pem, &issued)?;
        tracing::info!(members = ?resp.members, "joined cluster");
    }
    let listener = tls::listen(&cfg.api_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.api_addr.clone(),
            source,
        })?;
    if let Some(m) = &managed {
        keys::ensure_managed(&store, m, &encryption).await?;
    }
    // Cluster-wide secrets live in the replicated store; the first server makes them.
    let bootstrap = cfg.join.is_none();
    let ca_json = cluster_value(
        &store,
        &encryption,
        CA_KEY,
        if bootstrap {
            Some(serde_json::to_vec(&ClusterCa::generate()?).expect("json"))
        } else {
            None
        },
    )
    .await?;
    let ca: ClusterCa = serde_json::from_slice(&ca_json)
        .map_err(|e| ServerError::Bootstrap(format!("stored cluster ca: {e}")))?;
    if !peer.is_set() {
        peer.issue(&cfg.data_dir, &ca, id, cfg.cert_lifetime)?;
    }
    let admin = cluster_value(
        &store,
        &encryption,
        ADMIN_TOKEN_KEY,
        bootstrap.then(|| random_token(48).into_bytes()),
    )
    .await?;
    let admin_token = String::from_utf8_lossy(&admin).to_string();
    let advertised = advertised_addr(&cfg.api_addr, cfg.node_ip);
    let mut sans = cfg.tls_san.clone();
    sans.extend(cfg.node_ip.map(|ip| ip.to_string()));
    sans.push(cfg.services.api_ip().to_string());
    if let Ok(sa) = advertised.parse::<std::net::SocketAddr>() {
        sans.push(sa.ip().to_string());
    }
    let mut state = ApiState::new(
        store.clone(),
        token.clone(),
        admin_token.clone(),
        advertised.clone(),
        encryption.clone(),
    );
    state.managed_keys = managed;
    state.rest.objects.pod_security = cfg.pod_security;
    let renewal = certs::Renewal::new(
        &cfg.data_dir,
        &ca,
        id,
        &peer,
        pki::serving_hosts(&cfg.api_addr, &sans),
        cfg.cert_lifetime,
        state.metrics.clone(),
    )?;
    let tls_config = tls::server_config(&renewal.serving, &ca.cert_pem)?;
    crate::agents::configure(&ca.cert_pem, &renewal.client)?;
    tokio::spawn(renewal.run());
    write_private(&cfg.data_dir.join("ca.crt"), &ca.cert_pem)?;
    // What agents and servers join with: the secret, pinned to this CA.
    write_private(
        &cfg.data_dir.join("node-token"),
        &format!(
            "{}\n",
            skiff_common::jointoken::JoinToken::pinned(&ca.cert_pem, &token)
        ),
    )?;
    write_private(
        &cfg.data_dir.join("kubeconfig"),
        &kubeconfig(&advertised, &ca.cert_pem, &admin_token),
    )?;
    if let Some(schedule) = cfg.snapshots.clone() {
        tokio::spawn(crate::store::backup::run_schedule(
            store.clone(),
            token.clone(),
            schedule,
        ));
    }
    state.ca_pem = ca.cert_pem.clone();
    state.cert_lifetime = cfg.cert_lifetime;
    state.ca = Some(std::sync::Arc::new(ca.clone()));
    state.debug_kv = cfg.debug_kv;
    state.authn = state
        .authn
        .clone()
        .with_accounts(account_tokens(&store, &state.rest.objects).await?);
    state.rest.objects.services = std::sync::Arc::new(cfg.services.clone());
    ensure_defaults(&state, &cfg.pod_cidrs, &cfg.services).await;
    state.policy.start(state.rest.objects.clone()).await;
    {
        // Values written before encryption at rest (or under an older key
        // that was dropped from a user's file) are sealed now.
        let objects = state.rest.objects.clone();
        tokio::spawn(async move {
            match objects.reseal_all().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "sealed stored values with the current key"),
                Err(e) => tracing::warn!(error = %e.message, "cannot seal stored values yet"),
            }
        });
    }
    state.nodes.start(state.rest.objects.clone()).await;
    state.audit = Some(start_audit(&cfg)?);
    {
        let (state, addr) = (state.clone(), state.rest.server_addr.clone());
        tokio::spawn(async move { publish_apiserver(&state, id, &addr).await });
    }
    let admin = state.admin_token.clone();
    let objects = state.rest.objects.clone();
    let app = api::router(state);
    let settings = crate::controllers::registration::Settings {
        hpa_sync: cfg.hpa_sync_period,
        pod_cidrs: cfg.pod_cidrs,
        node_grace: cfg.node_grace,
        images: Some(crate::imagestore::Images::new(store.clone())),
        objects: Some(objects),
        root_ca: ca.cert_pem.clone(),
        signer: Some((std::sync::Arc::new(ca.clone()), cfg.cert_lifetime)),
    };
    tokio::spawn(crate::controllers::manager::run_while_leader(
        store.clone(),
        app.clone(),
        admin,
        settings,
    ));
    tokio::spawn(tell_systemd(store.clone()));
    tracing::info!(api_addr = %cfg.api_addr, "serving api (https)");
    tokio::select! {
        () = tls::serve(listener, tls_config, app, tls::connection_cap()) => Ok(()),
        () = shutdown_signal() => Ok(()),
        reason = store.stopped() => Err(ServerError::Stopped(reason)),
    }
}

/// Open the audit log as configured.
fn start_audit(cfg: &ServerConfig) -> Result<crate::api::audit::Auditor, ServerError> {
    use crate::api::audit::{Auditor, Policy, Sink};
    let a = &cfg.audit;
    let policy = match &a.policy {
        Some(p) => Policy::load(p).map_err(|e| ServerError::Bootstrap(e.to_string()))?,
        None => Policy::default(),
    };
    let sink = Sink {
        path: a
            .path
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("audit").join("audit.log")),
        max_bytes: if a.max_bytes == 0 {
            100 << 20
        } else {
            a.max_bytes
        },
        backups: a.backups,
    };
    Auditor::start(sink, policy).map_err(|e| ServerError::Bootstrap(e.to_string()))
}

/// Under systemd (`Type=notify`): ready once the store knows a leader (as
/// `/readyz`), then watchdog pings while the Raft loop runs.
async fn tell_systemd(store: Store) {
    use skiff_common::notify;
    while store.status().leader_id == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    notify::ready();
    let Some(every) = notify::watchdog_interval() else {
        return;
    };
    let mut stopped = std::pin::pin!(store.stopped());
    loop {
        notify::notify("WATCHDOG=1");
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addr_replaces_only_an_unspecified_ip() {
        let ip = Some("192.168.1.4".parse().unwrap());
        for (api, node_ip, want) in [
            ("127.0.0.1:6443", ip, "127.0.0.1:6443"),
            ("10.0.0.1:6443", ip, "10.0.0.1:6443"),
            ("0.0.0.0:6443", ip, "192.168.1.4:6443"),
            ("0.0.0.0:6443", None, "127.0.0.1:6443"),
            ("[::]:6443", None, "[::1]:6443"),
            ("[::]:7000", ip, "192.168.1.4:7000"),
            ("localhost:6443", ip, "localhost:6443"),
        ] {
            assert_eq!(advertised_addr(api, node_ip), want, "{api}");
        }
    }
}
