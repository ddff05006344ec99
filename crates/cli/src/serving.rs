//! Serving HTTP on the executor's worker threads, for `isola serve` and
//! `isola dev`: one listening socket, a copy per worker, each worker
//! answering the connections it accepts (`isola_api::serve_local`).

use isola_runtime_js::Executor;
use std::future::Future;
use std::net::SocketAddr;

/// A listening socket with a deep accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// Serves `router` on every worker thread of `executor` until `shutdown`
/// resolves, then lets open connections finish (within
/// `isola_api::SHUTDOWN_GRACE`). Each worker accepts from its own copy of
/// `listener` and closes it when it stops accepting, so new connections are
/// refused at once on shutdown. Fails if the workers stopped serving first.
pub async fn serve_on_workers(
    executor: &Executor,
    listener: std::net::TcpListener,
    router: isola_api::Router,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listeners = (0..executor.workers())
        .map(|_| Ok(std::sync::Mutex::new(Some(listener.try_clone()?))))
        .collect::<std::io::Result<Vec<_>>>()?;
    drop(listener);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served = executor.serve_on_workers(move |worker| {
        let listener = listeners[worker].lock().unwrap().take();
        let router = router.clone();
        let mut stopped = stopped.clone();
        async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            };
            let Some(listener) = listener else {
                return;
            };
            if let Err(error) = isola_api::serve_local(listener, router, shutdown).await {
                tracing::error!(worker, %error, "a worker could not serve");
            }
        }
    });
    tokio::pin!(served);
    let stopped_serving = tokio::select! {
        () = shutdown => false,
        () = &mut served => true,
    };
    let _ = stop.send(true);
    if stopped_serving {
        anyhow::bail!("the worker threads stopped serving (see the errors above)");
    }
    served.await;
    Ok(())
}
