//! Serving HTTP on the executor's worker threads, for `isola serve` and
//! `isola dev`: one listening socket per worker on the same address
//! (`SO_REUSEPORT`, so the kernel spreads new connections evenly over the
//! workers; with one shared socket, the first worker to wake took them
//! all), each worker answering the connections it accepts
//! (`isola_api::serve_local`).

use isola_runtime_js::Executor;
use std::future::Future;
use std::net::SocketAddr;

/// A listening socket with a deep accept queue, which other sockets of this
/// process may share the address of ([`share`] on its `local_addr`).
///
/// `SO_REUSEPORT` would also let another process of the same user listen
/// on the address unnoticed (a second node splitting the traffic), so the
/// address is first bound without it: a port in use is refused.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let probe = socket(addr)?;
    probe.set_reuseaddr(true)?;
    probe.bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    share(addr)
}

/// Another listening socket on `addr`, which a socket of [`listen`] holds.
pub fn share(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket(addr)?;
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

fn socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

/// Serves `router` on every worker thread of `executor` until `shutdown`
/// resolves, then lets open connections finish (within
/// `isola_api::SHUTDOWN_GRACE`). The first worker accepts from `listener`,
/// the others from sockets of their own on its address; each closes its
/// socket when it stops accepting, so new connections are refused at once
/// on shutdown. Fails if the workers stopped serving first.
pub async fn serve_on_workers(
    executor: &Executor,
    listener: std::net::TcpListener,
    router: isola_api::Router,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut listeners = vec![std::sync::Mutex::new(Some(listener))];
    for _ in 1..executor.workers() {
        listeners.push(std::sync::Mutex::new(Some(share(addr)?)));
    }
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
