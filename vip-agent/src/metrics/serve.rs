//! `GET /metrics` over HTTP/1 on `metrics.listen`: hyper's server, one request per
//! connection (no keep-alive, so a connection's life is bounded by the header timeout
//! and one answer), a few connections at a time. The text is encoded on a blocking
//! thread: the agent's runtime has one thread, which its loop needs, and the guard's
//! series walk kernel maps.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as TEXT_FORMAT;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 8;
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed accept (out of descriptors, …), before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds `listen`; the error names `metrics.listen`, the address and the OS error.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot serve metrics on {listen} (metrics.listen)"))
}

/// Serves the registry on a bound listener until the runtime stops.
pub fn serve_on(listener: TcpListener, registry: Arc<Registry>) -> JoinHandle<()> {
    if let Ok(listen) = listener.local_addr() {
        info!(event = "metrics", listen = %listen, "serving Prometheus metrics on http://{listen}/metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(
                        event = "metrics",
                        "accepting a metrics connection failed: {e}"
                    );
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(answer(&request, registry).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!(event = "metrics", %peer, "metrics connection: {e}");
                }
                drop(slot);
            });
        }
    })
}

/// 200 with the text for `GET /metrics`, 404 for another path, 405 for another method.
async fn answer(request: &Request<Incoming>, registry: Arc<Registry>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match tokio::task::spawn_blocking(move || super::render(&registry)).await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
            response
        }
        Err(e) => {
            warn!(event = "metrics", "encoding the metrics failed: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
