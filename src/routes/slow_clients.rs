//! Slow clients: a request body must arrive within `body_read_timeout_secs` of the request
//! head (which actix already bounds), or the request is answered `408 body_timeout` and its
//! connection closed, so trickling bodies cannot hold connections (and file descriptors).

use super::AppState;
use crate::error::ApiError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let timeout = req
        .app_data::<Data<AppState>>()
        .map(|state| state.body_read_timeout);
    let Some(timeout) =
        timeout.filter(|_| ![Method::GET, Method::HEAD, Method::OPTIONS].contains(req.method()))
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let expired = Arc::new(AtomicBool::new(false));
    let body = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: expired.clone(),
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(body),
    });
    let response = next.call(req).await?.map_into_boxed_body();
    if !expired.load(Ordering::Relaxed) {
        return Ok(response);
    }
    let error = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "The request body did not arrive in time.",
    );
    let (req, _) = response.into_parts();
    let mut answer = error.error_response();
    answer
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    Ok(ServiceResponse::new(req, answer))
}

/// The request body, failing once its deadline passes.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(chunk) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(chunk);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            let late = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body too slow");
            return Poll::Ready(Some(Err(PayloadError::Io(late))));
        }
        Poll::Pending
    }
}
