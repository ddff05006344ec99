//! Serving on the threads that run the isolates.
//!
//! Function traffic is served by the worker threads themselves: each one
//! accepts connections from the node's listening socket (one socket, shared;
//! a thread busy running JavaScript simply does not accept) and answers
//! their requests on the same thread, where the invocation runs too (see
//! `isola_runtime_js::Executor::serve_on_workers`), so a warm request never
//! crosses a thread. Connection tasks are spawned on the thread's
//! `LocalSet`, since a worker runs invocations that way.
//!
//! Only function traffic, the owner's invoke route and `/healthz` are
//! answered there. The rest of the management API and `/metrics` do storage
//! work, which stays off the worker threads: those requests are handed to
//! the main runtime, and their responses come back through a channel.

use crate::respond;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use tokio::runtime::Handle;

/// Where management requests go: the whole router, on the main runtime.
#[derive(Clone)]
struct Main {
    router: Router,
    runtime: Handle,
}

/// The router a worker thread serves: `routes::traffic_routes` here;
/// everything else through the main runtime.
pub(crate) fn worker_router(state: AppState, router: Router) -> Router {
    let main = Router::new()
        .route("/v1", any(to_main))
        .route("/v1/{*rest}", any(to_main))
        .route("/metrics", any(to_main))
        .with_state(Main {
            router,
            runtime: state.storage.clone(),
        });
    crate::routes::traffic_routes(&state)
        .with_state(state)
        .merge(main)
}

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Requests one HTTP/2 connection may have open at once.
const H2_STREAMS: u32 = 128;

/// Frames of a management response's body in flight between the runtimes.
const RELAY_FRAMES: usize = 8;

/// Answers a management request on the main runtime; its body is relayed
/// from there, so whatever produces it (a log stream) runs there too.
async fn to_main(State(main): State<Main>, request: Request) -> Response {
    use futures::StreamExt;
    use tower::ServiceExt;
    // What this router's matching left on the request (path parameters)
    // is not for the main router.
    let (mut parts, body) = request.into_parts();
    parts.extensions = Default::default();
    let request = Request::from_parts(parts, body);
    let (head, body) = tokio::sync::oneshot::channel();
    main.runtime.spawn(async move {
        let Ok(response) = main.router.oneshot(request).await;
        let (parts, body) = response.into_parts();
        let (frames, relayed) = tokio::sync::mpsc::channel(RELAY_FRAMES);
        if head.send((parts, relayed)).is_err() {
            return;
        }
        let mut stream = body.into_data_stream();
        while let Some(frame) = stream.next().await {
            if frames.send(frame).await.is_err() {
                break;
            }
        }
    });
    match body.await {
        Ok((parts, relayed)) => {
            let stream = tokio_stream::wrappers::ReceiverStream::new(relayed);
            Response::from_parts(parts, Body::from_stream(stream))
        }
        Err(_) => respond::plain(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Serves `router` on connections accepted from `listener` on this thread
/// (a worker's, inside its `LocalSet`) until `shutdown` resolves; then lets
/// open connections finish for up to [`crate::SHUTDOWN_GRACE`].
pub async fn serve_local(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut builder = auto::Builder::new(LocalExecutor);
    builder
        .http1()
        // A response's head and body in one write.
        .writev(false)
        // A client that takes this long to send a request's head is cut off.
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, typically: wait for some to close.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(crate::SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {:?} after the shutdown signal: closing them",
            crate::SHUTDOWN_GRACE
        );
    }
    Ok(())
}

/// Runs HTTP/2 streams as tasks of this thread's `LocalSet`.
#[derive(Clone, Copy)]
struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}
