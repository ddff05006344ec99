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

impl WasiHttpHooks for Outbound {
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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

/// A response body that counts its bytes against the invocation's budget.
struct Counted {
    inner: hyper::body::Incoming,
    budget: Arc<Budget>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled.map(|next| next.map(|frame| frame.map_err(Error::from)));
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
