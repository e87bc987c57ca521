//! The connections: a socket bound before the store opens, the accept loop with its cap (a share of the descriptor
//! limit), the idle timeout of each connection, and the drain at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::{watch, Semaphore};

use super::{ACCEPT_ERROR_PAUSE, CONNECTION_IDLE_TIMEOUT, IDLE_TIMEOUT_ENV, SHUTDOWN_DRAIN_TIMEOUT};
use crate::error_bodies::{JsonErrors, MAX_REQUEST_HEADERS, MAX_REQUEST_HEAD_BYTES};

/// Serves `router` on `listener` until `shutdown` completes: at most `max_connections` connections at once (past it
/// new ones wait in the listen queue), each closed when idle for [`idle_timeout`]. Then it stops accepting, lets the
/// open connections finish their requests (idle ones close at once) for at most [`SHUTDOWN_DRAIN_TIMEOUT`], and
/// returns.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let idle = idle_timeout();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle)
                .max_header_size(MAX_REQUEST_HEAD_BYTES)
                .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                .max_headers(MAX_REQUEST_HEADERS);
            // hyper's own answers to a head it cannot parse get the server's JSON error body.
            let io = hyper_util::rt::TokioIo::new(JsonErrors::new(stream));
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    closing.send_replace(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(
            "{} still open after {SHUTDOWN_DRAIN_TIMEOUT:?}; closing them",
            crate::text::counted((max_connections - slots.available_permits()) as u64, "connection")
        );
    }
}

/// After a failed accept: nothing for an error of that one connection (the client left); a pause for a shortage of
/// descriptors or memory, so the loop does not spin, with a warning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused) {
        return;
    }
    tracing::warn!(
        "cannot accept a connection: {e}; trying again in {ACCEPT_ERROR_PAUSE:?} (raise the descriptor limit, \
         `ulimit -n`, if this repeats)"
    );
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Connections waiting to be accepted, at most (tokio's `TcpListener::bind` uses the same).
pub(super) const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr` but not listening yet. Binding fails (`Address already in use`) when another socket
/// listens there; `SO_REUSEADDR` lets a restart bind while connections of the previous process linger in TIME_WAIT.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// [`CONNECTION_IDLE_TIMEOUT`], or what [`IDLE_TIMEOUT_ENV`] sets (tests).
pub(super) fn idle_timeout() -> Duration {
    std::env::var(IDLE_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(CONNECTION_IDLE_TIMEOUT, Duration::from_millis)
}
