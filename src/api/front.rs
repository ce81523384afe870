//! The front door: the one service hyper calls for every request, with the router behind it.
//!
//! In order: [`Access::check`] (Host, Origin, preflight marker, token); a body announced over the
//! size limit answered 413 at once; `GET /hub/status` answered from the published snapshot;
//! everything else routed. On the way out the router's 405 to `OPTIONS` becomes 204 with `Allow`,
//! and any error answer that is not JSON becomes the envelope.
//!
//! Why one plain service and not `axum::middleware::from_fn` layers, and why the status skips the
//! router: under wrk, a status read (100 models, 40 KB) cost hub 25 µs of CPU where nginx spends
//! 14 µs on the same bytes, and a third of hub's went to three `from_fn` layers, a second router
//! around the first, routing, the handler and clones of the app state (each layer boxed and
//! cloned its inner service on every request). Now it costs 15 µs, 0.4 µs of it here; the rest is
//! hyper, tokio, and the kernel copying and sending the bytes. The status is the endpoint that
//! dashboards, monitors and `hub status` loops poll, and SPEC section 10 holds it to 80% of nginx;
//! it needs nothing the router adds. Its route stays for `HEAD` and the OpenAPI document, and
//! answers through the same function.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use hyper::body::Incoming;

use super::access::{self, Access};
use super::error;
use crate::config::MAX_FILE_BYTES;
use crate::reconcile::Handle;

/// The whole API as one service: the checks of this file, then `router`. Cloned once per
/// connection.
#[derive(Clone)]
pub struct App {
    pub(super) access: Arc<Access>,
    pub(super) hub: Handle,
    pub(super) router: Router,
}

type Routed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Routed>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let answer = |response: Response| Either::Left(ready(Ok(response)));
        let gateway = access::is_gateway(request.uri().path());
        if let Err(refused) =
            self.access
                .check(request.method(), request.uri().path(), request.headers())
        {
            return answer(refused);
        }
        if gateway && announced_too_large(&request, super::openai::MAX_REQUEST_BYTES) {
            return answer(super::openai::GatewayError::too_large().into_response());
        }
        if !gateway && announced_too_large(&request, MAX_FILE_BYTES) {
            return answer(error::rewrite(StatusCode::PAYLOAD_TOO_LARGE, "").into_response());
        }
        if request.method() == Method::GET && request.uri().path() == "/hub/status" {
            return answer(super::status_response(&self.hub));
        }
        let options = request.method() == Method::OPTIONS;
        let mut router = self.router.clone();
        let routed = tower_service::Service::call(&mut router, request.map(Body::new));
        Either::Right(Box::pin(async move {
            let response = routed.await?;
            // A worker's answer is the worker's, errors included.
            if response
                .extensions()
                .get::<super::openai::Proxied>()
                .is_some()
            {
                return Ok(response);
            }
            let response = if options {
                access::options(response)
            } else {
                response
            };
            Ok(error::envelope(response).await)
        }))
    }
}

/// Whether the request's `Content-Length` is over the limit, so it can be refused at once instead
/// of reading (and waiting for) a body that would be refused anyway.
fn announced_too_large<B>(request: &hyper::Request<B>, limit: u64) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length > limit)
}
