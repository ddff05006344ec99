//! Outbound `wasi:http` requests of a component, under the same rules as
//! JavaScript's `fetch`: deny-by-default addresses (the address checked is
//! the one connected to, so DNS cannot be turned against the check), at
//! most `max_subrequests` requests per invocation, `subrequest_timeout_ms`
//! to a response head, and `max_subrequest_mb` of response bodies.

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use isola_core::net::{ConnectError, NetRules};
use isola_core::FunctionSource;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What the hooks hand back for a request: the response and its I/O.
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// One invocation's outbound budget and rules.
struct Budget {
    /// The address rules, made at the first request.
    rules: OnceLock<NetRules>,
    /// The `allowed_hosts` entries, resolved at the first request.
    allowed: Vec<String>,
    max_subrequests: u32,
    made: AtomicU32,
    max_bytes: u64,
    read: AtomicU64,
    timeout: Duration,
}

/// The `wasi:http` hooks of one run.
pub struct Outbound(Arc<Budget>);

impl Outbound {
    /// The hooks for one run of `function`.
    pub fn of(function: &FunctionSource) -> Self {
        let limits = &function.limits;
        Self(Arc::new(Budget {
            rules: OnceLock::new(),
            allowed: function.allowed_hosts.clone(),
            max_subrequests: limits.max_subrequests,
            made: AtomicU32::new(0),
            max_bytes: limits.max_subrequest_mb as u64 * 1024 * 1024,
            read: AtomicU64::new(0),
            timeout: Duration::from_millis(limits.subrequest_timeout_ms as u64),
        }))
    }
}

/// Largest chunk a handler may write to a body at once (wasi:http's
/// default is 1 MiB; with up to [`crate::http`]'s 16 chunks in flight per
/// response, that much is held for a client that reads slowly).
const BODY_CHUNK: usize = 64 << 10;

impl WasiHttpHooks for Outbound {
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Sent {
        let budget = self.0.clone();
        Box::new(async move {
            let made = budget.made.fetch_add(1, Ordering::Relaxed) + 1;
            if made > budget.max_subrequests {
                return Err(Error::HttpRequestDenied);
            }
            let timeout = budget.timeout;
            match tokio::time::timeout(timeout, send(request, budget)).await {
                Ok(sent) => sent,
                Err(_) => Err(Error::ConnectionReadTimeout),
            }
        })
    }
}

/// The node's address rules with the function's `allowed_hosts` opened
/// (host names among them resolved now, off the async threads).
async fn rules_for(budget: &Arc<Budget>) -> Result<&NetRules, Error> {
    if let Some(rules) = budget.rules.get() {
        return Ok(rules);
    }
    let allowed = budget.allowed.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        isola_core::net::resolve_allowed(&allowed).map(|nets| NetRules::with_allowed(&nets))
    })
    .await
    .map_err(|_| Error::InternalError(None))?
    .map_err(|_| Error::DestinationNotFound)?;
    Ok(budget.rules.get_or_init(|| resolved))
}

async fn send(
    mut request: http::Request<WasiBody>,
    budget: Arc<Budget>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri().clone();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let rules = rules_for(&budget).await?;
    let stream = isola_core::net::connect_permitted(&host, port, rules)
        .await
        .map_err(|error| match error {
            ConnectError::Denied { .. } => Error::DestinationIpProhibited,
            ConnectError::Unresolved { .. } => Error::DestinationNotFound,
            ConnectError::Failed { .. } => Error::ConnectionRefused,
        })?;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = if tls {
        Box::new(tls_stream(stream, &host).await?)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    // The request line carries the path only (no proxy in between).
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let connection = tokio::spawn(connection);
    // What the function uploads counts against the same budget as what it
    // downloads.
    let request = request.map(|body| {
        Counted {
            inner: body,
            budget: budget.clone(),
        }
        .boxed_unsync()
    });
    let response = sender.send_request(request).await.map_err(Error::from)?;
    let response = response.map(|body| {
        Counted {
            inner: body,
            budget: budget.clone(),
        }
        .boxed_unsync()
    });
    let io: IoFuture = Box::new(async move {
        match connection.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Error::from(error)),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    });
    Ok((response, io))
}

/// What a connection is read and written through: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// TLS over `stream` for `host`, with the web's root certificates.
async fn tls_stream(
    stream: tokio::net::TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
    use tokio_rustls::rustls;
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(config))
    });
    let config = config.clone().ok_or(Error::TlsProtocolError)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| Error::TlsCertificateError)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(Error::Tls)
}

/// A body that counts its bytes against the invocation's budget.
struct Counted<B> {
    inner: B,
    budget: Arc<Budget>,
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled.map(|next| next.map(|frame| frame.map_err(Into::into)));
        };
        if let Some(data) = frame.data_ref() {
            let read = self
                .budget
                .read
                .fetch_add(data.len() as u64, Ordering::Relaxed)
                + data.len() as u64;
            if read > self.budget.max_bytes {
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                    self.budget.max_bytes,
                )))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local server answering every connection's first request with
    /// `body`.
    async fn upstream(body: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = stream.read(&mut head).await;
                    let reply =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                });
            }
        });
        port
    }

    fn request(port: u16) -> http::Request<WasiBody> {
        let empty = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(format!("http://127.0.0.1:{port}/x"))
            .body(empty)
            .unwrap()
    }

    async fn send(hooks: &mut Outbound, port: u16) -> Result<http::Response<WasiBody>, Error> {
        let sent = hooks.send_request(request(port), None, Box::new(async { Ok(()) }));
        Box::into_pin(sent).await.map(|(response, _io)| response)
    }

    fn function(allowed: &[&str], limits: isola_core::Limits) -> FunctionSource {
        let mut function = FunctionSource::single_module("f", "f", "");
        function.allowed_hosts = allowed.iter().map(|h| h.to_string()).collect();
        function.limits = limits;
        function
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed_and_budgets_hold() {
        let port = upstream(b"hello").await;
        let mut closed = Outbound::of(&function(&[], Default::default()));
        let refused = send(&mut closed, port).await.unwrap_err();
        assert!(
            matches!(refused, Error::DestinationIpProhibited),
            "{refused:?}"
        );
        let limits = isola_core::Limits {
            max_subrequests: 2,
            ..Default::default()
        };
        let mut open = Outbound::of(&function(&["127.0.0.1"], limits));
        let response = send(&mut open, port).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
        assert!(send(&mut open, port).await.is_ok());
        // The third request of the invocation is over its budget.
        let over = send(&mut open, port).await.unwrap_err();
        assert!(matches!(over, Error::HttpRequestDenied), "{over:?}");
    }

    #[tokio::test]
    async fn response_bodies_count_against_the_byte_budget() {
        static BIG: [u8; 1536 * 1024] = [b'x'; 1536 * 1024];
        let port = upstream(&BIG).await;
        let limits = isola_core::Limits {
            max_subrequest_mb: 1,
            ..Default::default()
        };
        let mut hooks = Outbound::of(&function(&["127.0.0.1"], limits));
        let response = send(&mut hooks, port).await.unwrap();
        let read = response.into_body().collect().await;
        assert!(
            matches!(read, Err(Error::HttpResponseBodySize(Some(_)))),
            "{:?}",
            read.map(|b| b.to_bytes().len())
        );
    }
}
