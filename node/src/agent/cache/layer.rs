//! The cache as a layer of the agent's API client: it keeps answers on the
//! way in and answers from them while no server does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame};
use tower::BoxError;

use super::{Cache, Kept, is_watch, key};

pub type Answer = Response<UnsyncBoxBody<Bytes, BoxError>>;

/// Longest a request (other than a watch) waits for its answer's head: a
/// server cut off without a word (packets dropped, not refused) would
/// otherwise hold it until TCP gives up, minutes later.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Wraps the client's service in the cache.
#[derive(Clone)]
pub struct CacheLayer(pub Cache);

impl<S> tower::Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            cache: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Cache,
}

/// An answer from the cache, marked as such.
fn from_cache(kept: Kept) -> Answer {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, kept.content_type)
        .header("x-skiff-from-cache", "true");
    if let Some(d) = kept.digest {
        b = b.header("docker-content-digest", d);
    }
    b.body(
        Full::new(Bytes::from(kept.body))
            .map_err(BoxError::from)
            .boxed_unsync(),
    )
    .expect("a cached answer")
}

/// A watch while no server answers: no event, and the end of the stream once
/// one does (its caller then lists afresh).
fn waiting_watch(cache: &Cache) -> Answer {
    let offline = cache.offline.clone();
    let end = futures::stream::once(async move { offline.until_back().await })
        .filter_map(|()| async { None::<Result<Frame<Bytes>, BoxError>> });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(end).boxed_unsync())
        .expect("a waiting watch")
}

/// The servers cannot take writes now.
fn unreachable() -> BoxError {
    "no api server is reachable (the node runs from its cache)".into()
}

/// A watch's answer, passed through, its events applied to the cached list.
fn following<B>(cache: Cache, key: String, resp: Response<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let mut pending: Vec<u8> = Vec::new();
    let stream = body
        .map_err(Into::into)
        .into_data_stream()
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                pending.extend_from_slice(bytes);
                while let Some(n) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=n).collect();
                    cache.apply(&key, &line[..n]);
                }
            }
            chunk.map(Frame::data)
        });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

/// A successful plain read: kept (when it is JSON), then handed on.
async fn keeping<B>(cache: Cache, key: String, resp: Response<B>) -> Result<Answer, BoxError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    let header = |h: &str| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    if content_type.contains("json") {
        let digest = header("docker-content-digest");
        cache.store(&key, &content_type, digest.as_deref(), &bytes);
    }
    Ok(Response::from_parts(
        parts,
        Full::new(bytes).map_err(BoxError::from).boxed_unsync(),
    ))
}

impl<S, B> tower::Service<Request<kube::client::Body>> for CacheService<S>
where
    S: tower::Service<Request<kube::client::Body>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let cache = self.cache.clone();
        // The inner service was made ready; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let read = req.method() == Method::GET;
        let watch = read && is_watch(req.uri());
        let key = if read { key(req.uri()) } else { None };
        Box::pin(async move {
            if cache.offline.is() {
                match (&key, watch) {
                    (Some(_), true) => return Ok(waiting_watch(&cache)),
                    (Some(k), false) => {
                        if let Some(kept) = cache.load(k) {
                            return Ok(from_cache(kept));
                        }
                    }
                    _ if !read => return Err(unreachable()),
                    _ => {}
                }
            }
            let call = inner.call(req);
            let answered = if watch {
                call.await
            } else {
                tokio::time::timeout(ANSWER_WITHIN, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(BoxError::from(format!(
                            "no answer from the api server within {ANSWER_WITHIN:?}"
                        )))
                    })
            };
            let resp = match answered {
                Ok(r) => r,
                Err(e) => {
                    if !cache.check_servers().await {
                        return Err(e);
                    }
                    return match (&key, watch) {
                        (Some(_), true) => Ok(waiting_watch(&cache)),
                        (Some(k), false) => cache.load(k).map(from_cache).ok_or(e),
                        _ => Err(e),
                    };
                }
            };
            let Some(key) = key else {
                return Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()));
            };
            let status = resp.status();
            if status.is_success() && watch {
                return Ok(following(cache, key, resp));
            }
            if status.is_success() {
                return keeping(cache, key, resp).await;
            }
            if status == StatusCode::NOT_FOUND && !watch {
                cache.forget(&key);
            }
            // A server that answers but cannot serve (no quorum): the last
            // view rather than nothing.
            if status == StatusCode::SERVICE_UNAVAILABLE
                && !watch
                && let Some(kept) = cache.load(&key)
            {
                return Ok(from_cache(kept));
            }
            Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        })
    }
}
