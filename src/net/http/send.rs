//! Sends one outgoing request to addresses the policy already allowed: TCP connect (each
//! address in turn, under the connect timeout), TLS for `https` (rustls with the webpki root
//! certificates, the server name checked being the request's host), then HTTP/1.1 by hyper.
//! Adapted from wasmtime-wasi-http's `default_send_request`, which connects by name (and so
//! resolves again, after any check) — the one thing cell must not do.
//!
//! Bounded: hyper reads at most [`HTTP_READ_BUF_BYTES`] ahead of the guest and at most
//! [`HTTP_MAX_HEADERS`] response headers; the request body reaches hyper one chunk at a time
//! through wasmtime-wasi-http's bounded channel. The [`SocketPermit`] lives as long as the
//! connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use crate::limits::{HTTP_MAX_HEADERS, HTTP_READ_BUF_BYTES};
use crate::net::count::SocketPermit;

/// How long each phase of a request may take (already capped by the caller).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// Where and how to send a request, all of it decided already.
pub(super) struct Link {
    /// Allowed addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
    /// For `https`: the name the server's certificate must carry.
    pub tls: Option<ServerName<'static>>,
    pub timeouts: Timeouts,
    /// The request's socket against `max-sockets`, released when the connection ends.
    pub permit: SocketPermit,
}

/// The name a TLS server's certificate is checked against: the request's host.
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    match crate::net::policy::parse_ip(host) {
        Some(ip) => Ok(ServerName::from(ip)),
        None => ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid),
    }
}

/// One TLS client configuration for the whole host: building the root store costs ~1 ms.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            match config {
                Ok(config) => Arc::new(config),
                // The ring provider supports the default versions: this cannot happen, and
                // if it did every HTTPS request would fail its handshake, loudly.
                Err(e) => {
                    tracing::error!("TLS client configuration: {e}");
                    Arc::new(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    )
                }
            }
        })
        .clone()
}

trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Io for T {}

async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Sends `request` over `link`: the response (its body streaming under the between-bytes
/// timeout) and the connection's driver, which the caller runs until the body is done.
pub(super) async fn send(
    mut request: http::Request<WasiBody>,
    link: Link,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let Link {
        addrs,
        tls,
        timeouts,
        permit,
    } = link;
    let stream = connect(&addrs, timeouts.connect).await?;
    let stream: Box<dyn Io> = match tls {
        Some(name) => {
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            let tls = tokio::time::timeout(timeouts.connect, connector.connect(name, stream))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?;
            Box::new(tls)
        }
        None => Box::new(stream),
    };
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .max_buf_size(HTTP_READ_BUF_BYTES)
        .max_headers(HTTP_MAX_HEADERS);
    let (mut sender, conn) =
        tokio::time::timeout(timeouts.connect, builder.handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
    // The request line carries only the path: scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let between_bytes = timeouts.between_bytes.max(Duration::from_nanos(1));
    let respond = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        Ok::<_, Error>(response.map(|incoming| {
            let mut timer = tokio::time::interval(between_bytes);
            timer.reset();
            Timed { incoming, timer }.boxed_unsync()
        }))
    };
    // Drive the connection while waiting for the response head.
    let mut respond = std::pin::pin!(respond);
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| match respond.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(c) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(c).poll(cx));
            conn = None;
            match done {
                Ok(()) => respond.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let io = async move {
        let _permit = permit;
        match conn {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|e| match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            }),
        }
    };
    Ok((response, Box::new(io)))
}

/// A response body that fails with `connection-read-timeout` when no frame arrives within the
/// between-bytes timeout.
struct Timed {
    incoming: hyper::body::Incoming,
    timer: tokio::time::Interval,
}

impl http_body::Body for Timed {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match e.is_timeout() {
                true => Error::HttpResponseTimeout,
                false => Error::from(e),
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timer.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
