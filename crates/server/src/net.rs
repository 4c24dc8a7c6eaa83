//! The HTTP/1.1 connection loop: hyper with a header-read timeout (a client that does not send
//! a complete request head within [`crate::ServerConfig::header_read_timeout_s`] is
//! disconnected, so incomplete requests cannot pile up), the client address for each request
//! (`ConnectInfo<SocketAddr>`), and a graceful shutdown that lets the requests in flight finish.
//! With built-in TLS ([`crate::tls`]) each connection first completes its TLS handshake, within
//! the same header-read timeout, and then speaks HTTP/1.1 over it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, ask every open
/// connection to close after its current request, and wait for them (at most `drain`). With
/// `tls`, every connection is TLS (a client that does not complete its handshake within
/// `header_read_timeout` is disconnected; a failed handshake closes the connection).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone of `done_tx`; all are gone when `recv` yields None.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    eprintln!("medtwin serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, done) = (app.clone(), stop_rx.clone(), done_tx.clone());
        match &tls {
            None => {
                tokio::spawn(connection(
                    stream,
                    remote,
                    app,
                    header_read_timeout,
                    stop,
                    done,
                ));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move {
                    // A failed or too slow handshake (plain HTTP to the TLS port, a scanner)
                    // just closes the connection.
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(header_read_timeout, handshake).await
                    {
                        connection(stream, remote, app, header_read_timeout, stop, done).await;
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = tokio::time::timeout(drain, done_rx.recv()).await;
}

/// One connection: requests until the client closes, the header timeout strikes, or shutdown.
async fn connection<S>(
    stream: S,
    remote: SocketAddr,
    app: axum::Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _done: tokio::sync::mpsc::Sender<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req.map(Body::new)).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
