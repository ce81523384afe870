//! Serves the router: HTTP/1.1 through hyper, with a deadline for a request's headers and a cap
//! on open connections, and a graceful shutdown.
//!
//! This is `axum::serve`'s loop with the two limits it does not offer: without them a client
//! that opens connections and never finishes a request (slowloris) keeps each one, and its file
//! descriptor, forever, until hub cannot open a worker's log or spawn a worker.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::App;

/// How long a client may take to send a request's headers, and how long a kept-alive connection
/// may sit idle before its next request. Long answers (the event stream, a log follow) are not
/// limited: the deadline only runs while hub waits for headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once. Further ones wait in the listen backlog until one
/// closes, so a flood costs clients a wait, not hub its file descriptors.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves `app` on `listener` from a thread of its own with a single-threaded runtime, until
/// `shutdown` completes; the returned receiver resolves once every connection has closed.
///
/// Why a thread of its own: the API then never competes with the reconcile loop and its jobs for
/// a runtime thread. A burst of status reads cannot delay a pass, and a pass (plan, status build,
/// state file) cannot delay a read, which is served from the last published snapshot. One thread
/// is what nginx runs per core; every answer here is either a snapshot's bytes or a message to
/// the loop, so one is plenty, and it leaves the other cores to the loop, the workers and the
/// clients. On the two-core bench machine, where wrk takes a core, status reads went from 75% of
/// nginx's (median of 5 rounds) to 86% (`bench/run`, part 3): two runtime threads had contended
/// with wrk for the cores.
pub fn serve_on_own_thread(
    listener: std::net::TcpListener,
    app: App,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("hub-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, app, header_read_timeout, shutdown).await,
                    Err(error) => tracing::error!("API: cannot use the listener: {error}"),
                }
            });
            // Tasks still running (a log follow whose client is gone) end with the runtime.
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(finished)
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets every
/// connection finish the request it is answering, and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    app: App,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Every connection holds a receiver; dropping the sender tells them all to wind down.
    let (stop, stopping) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers go out as they are written: a proxied answer is several writes (its head, then
        // each chunk as the worker sends it), which Nagle's algorithm would hold back until the
        // client acknowledged the previous one. nginx sets this too.
        let _ = stream.set_nodelay(true);
        let service = app.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                // A slow or vanished client: theirs to know, not an error of hub's.
                tracing::debug!("API connection ended: {error}");
            }
        });
    }
    drop(listener);
    drop(stop);
    // Every connection gives its slot back when it has closed.
    let _ = slots.acquire_many(MAX_CONNECTIONS as u32).await;
}

/// Waits after a failed accept. A connection that died before it was accepted is the client's
/// problem; anything else (out of file descriptors) is waited out rather than spun on.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("API: cannot accept a connection: {error}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
