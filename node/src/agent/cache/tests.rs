//! The cache alone (keys, lists kept current by watch events, files owner-only) and as a layer over an API that answers or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::*;

fn uri(s: &str) -> http::Uri {
    s.parse().unwrap()
}

#[test]
fn keys_ignore_how_a_list_is_read() {
    let list = key(&uri(
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=500",
    ))
    .unwrap();
    let watch = key(&uri(
        "/api/v1/pods?watch=true&resourceVersion=12&fieldSelector=spec.nodeName%3Dn1&timeoutSeconds=290&allowWatchBookmarks=true",
    ))
    .unwrap();
    assert_eq!(list, watch);
    assert_eq!(list, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1");
    assert_ne!(
        key(&uri("/api/v1/pods?labelSelector=a%3Db")),
        key(&uri("/api/v1/pods"))
    );
    assert_eq!(key(&uri("/api/v1/pods?limit=2&continue=abc")), None);
    assert_eq!(
        key(&uri(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        )),
        None
    );
    assert!(is_watch(&uri("/api/v1/pods?watch=1")));
    assert!(!is_watch(&uri("/api/v1/pods?watchy=1")));
}

fn pod(name: &str, rv: &str) -> Value {
    json!({"metadata": {"namespace": "default", "name": name, "resourceVersion": rv}})
}

#[test]
fn watch_events_keep_a_list_current() {
    let mut list = json!({"kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [pod("a", "1"), pod("b", "1")]});
    assert!(apply_event(&mut list, "MODIFIED", &pod("a", "2")));
    assert!(apply_event(&mut list, "ADDED", &pod("c", "3")));
    assert!(apply_event(&mut list, "DELETED", &pod("b", "4")));
    assert!(!apply_event(&mut list, "DELETED", &pod("zz", "5")));
    assert!(apply_event(
        &mut list,
        "BOOKMARK",
        &json!({"metadata": {"resourceVersion": "6"}})
    ));
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(list["items"][0]["metadata"]["resourceVersion"], "2");
    assert_eq!(list["metadata"]["resourceVersion"], "6");
}

fn cache(dir: &Path) -> Cache {
    // No server listens on port 1 of loopback: every check finds them away.
    Cache::open(dir, Servers::load("127.0.0.1:1", None)).unwrap()
}

#[test]
fn answers_are_kept_on_disk_owner_only_and_lists_follow_their_watch() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(tmp.path());
    let k = "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1";
    let body = json!({"metadata": {"resourceVersion": "1"}, "items": [pod("a", "1")]});
    c.store(k, "application/json", None, body.to_string().as_bytes());
    let mode = std::fs::metadata(c.file(k)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    c.apply(
        k,
        json!({"type": "ADDED", "object": pod("b", "2")})
            .to_string()
            .as_bytes(),
    );
    c.flush();
    // Another agent process reads what this one left.
    let again = cache(tmp.path());
    let kept: Value = serde_json::from_str(&again.load(k).unwrap().body).unwrap();
    assert_eq!(kept["items"].as_array().unwrap().len(), 2);
    assert_eq!(kept["metadata"]["resourceVersion"], "2");
    again.forget(k);
    assert!(again.load(k).is_none());
}

/// An API that answers `/api/v1/namespaces/default/configmaps/x` and a
/// watch of one event, or fails as an unreachable server does.
#[derive(Clone)]
struct FakeApi {
    up: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let up = self.up.load(Ordering::SeqCst);
        let watch = is_watch(req.uri());
        Box::pin(async move {
            if !up {
                return Err(BoxError::from("connection refused"));
            }
            let body = if watch {
                format!(
                    "{}\n",
                    json!({"type": "MODIFIED", "object": {"metadata": {"namespace": "default", "name": "x", "resourceVersion": "2"}, "data": {"k": "v2"}}})
                )
            } else {
                json!({"metadata": {"namespace": "default", "name": "x", "resourceVersion": "1"}, "data": {"k": "v1"}}).to_string()
            };
            Ok(Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap())
        })
    }
}

async fn get(
    svc: &mut (
             impl Service<Request<kube::client::Body>, Response = super::layer::Answer, Error = BoxError>
             + Send
         ),
    path: &str,
) -> Result<(bool, String), BoxError> {
    let req = Request::get(path)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = svc.ready().await?.call(req).await?;
    let cached = resp.headers().contains_key("x-skiff-from-cache");
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((cached, String::from_utf8_lossy(&body).into_owned()))
}

/// A cache in `dir` over a [`FakeApi`] that answers.
fn cached_api(dir: &Path) -> (Cache, FakeApi, super::layer::CacheService<FakeApi>) {
    let c = cache(dir);
    let api = FakeApi {
        up: Arc::new(AtomicBool::new(true)),
        calls: Arc::default(),
    };
    let svc = CacheLayer(c.clone()).layer(api.clone());
    (c, api, svc)
}

#[tokio::test]
async fn while_no_server_answers_reads_come_from_the_cache_and_writes_fail_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, api, mut svc) = cached_api(tmp.path());
    let path = "/api/v1/namespaces/default/configmaps/x";
    let (cached, body) = get(&mut svc, path).await.unwrap();
    assert!(!cached && body.contains("v1"));

    api.up.store(false, Ordering::SeqCst);
    let (cached, body) = get(&mut svc, path).await.unwrap();
    assert!(cached && body.contains("v1"), "{body}");
    assert!(c.offline.is());
    // Offline: no request reaches the network for what is kept, and writes
    // fail without trying.
    let before = api.calls.load(Ordering::SeqCst);
    get(&mut svc, path).await.unwrap();
    let post = Request::post(path)
        .body(kube::client::Body::empty())
        .unwrap();
    assert!(svc.ready().await.unwrap().call(post).await.is_err());
    assert_eq!(api.calls.load(Ordering::SeqCst), before);
    // Something never read is not invented.
    assert!(
        get(&mut svc, "/api/v1/namespaces/default/configmaps/y")
            .await
            .is_err()
    );
    // A watch waits, without events, while the servers are away.
    let req = Request::get(format!("{path}?watch=true"))
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        resp.into_body().collect(),
    )
    .await;
    assert!(waited.is_err(), "the watch stays open while offline");
}

#[tokio::test]
async fn a_watch_keeps_the_cached_list_current() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, _, mut svc) = cached_api(tmp.path());
    let list = json!({"metadata": {"resourceVersion": "1"}, "items": [
        {"metadata": {"namespace": "default", "name": "x", "resourceVersion": "1"}, "data": {"k": "v1"}}]});
    let k = "/api/v1/namespaces/default/configmaps";
    c.store(k, "application/json", None, list.to_string().as_bytes());
    let (_, body) = get(&mut svc, &format!("{k}?watch=true&resourceVersion=1"))
        .await
        .unwrap();
    assert!(body.contains("MODIFIED"), "the events pass through: {body}");
    c.flush();
    let kept: Value = serde_json::from_str(&c.load(k).unwrap().body).unwrap();
    assert_eq!(kept["items"][0]["data"]["k"], "v2");
    assert_eq!(kept["metadata"]["resourceVersion"], "2");
}
