//! The REST listener's accept loop (in place of `axum::serve`, which cannot
//! do TLS or bound slow clients): hyper-util's HTTP/1 + HTTP/2 connection
//! builder over plain TCP or tokio-rustls.
//!
//! Slow clients cannot hold connections: the TLS handshake, protocol
//! detection and the first request's headers must all arrive within the
//! header read timeout of the accept; later requests on a kept-alive HTTP/1
//! connection get the same budget through hyper's `header_read_timeout`.
//! On shutdown the loop stops accepting, and every open connection finishes
//! its in-flight request and closes (the caller bounds the wait).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{body::Body, Router};
use hyper::{body::Incoming, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the HTTP listener serves its connections.
#[derive(Clone)]
pub struct HttpServeOptions {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` is cancelled and every
/// connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: HttpServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let tls = options.tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off a little
                    // instead of spinning; the listener itself is fine.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let stream = match super::tcp::configured(stream) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "connection closed before it was configured");
                continue;
            }
        };
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            watcher: graceful.watcher(),
            header_read_timeout: options.header_read_timeout,
            peer,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let outcome = match tls {
                Some(acceptor) => connection.serve_tls(acceptor, stream).await,
                None => connection.serve(stream).await,
            };
            if let Err(reason) = outcome {
                tracing::debug!(%peer, reason, "HTTP connection closed");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
    header_read_timeout: Duration,
    /// The client's address, handed to handlers as `ConnectInfo` (the
    /// per-client rate limit keys on it).
    peer: std::net::SocketAddr,
}

impl Connection {
    async fn serve_tls(self, acceptor: TlsAcceptor, stream: TcpStream) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.header_read_timeout;
        let tls_stream = tokio::time::timeout_at(deadline, acceptor.accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|err| format!("TLS handshake failed: {err}"))?;
        self.serve_until(tls_stream, deadline).await
    }

    async fn serve(self, stream: TcpStream) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.header_read_timeout;
        self.serve_until(stream, deadline).await
    }

    /// Serves the connection; closes it if no request has started by
    /// `deadline` (hyper's own timeout only starts once the protocol is
    /// known, which a silent client never lets happen).
    async fn serve_until<I>(self, io: I, deadline: tokio::time::Instant) -> Result<(), String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first_request = CancellationToken::new();
        let service = {
            let first_request = first_request.clone();
            let app = self.app;
            let peer = self.peer;
            hyper::service::service_fn(move |request: Request<Incoming>| {
                first_request.cancel();
                let app = app.clone();
                let mut request = request.map(Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                async move {
                    let response: Response<Body> = app.oneshot(request).await?;
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let connection = self.watcher.watch(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::pin!(connection);
        tokio::select! {
            result = &mut connection => return result.map_err(|err| err.to_string()),
            () = first_request.cancelled() => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err("no request within the header read timeout".to_owned());
            }
        }
        connection.await.map_err(|err| err.to_string())
    }
}
