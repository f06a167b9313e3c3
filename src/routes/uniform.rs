//! What every endpoint does alike: `HEAD` is answered wherever `GET` is (the same headers, no
//! body); an error the framework produced itself — an oversized body (413), an unreadable
//! one — gets the JSON error body of DESIGN §3 like every other error; every 429 is counted, and
//! every refusal by a limit or cap under the limit's name.

use crate::error::{ApiError, LimitHit};
use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The connection's codec remembers the request was HEAD and sends no body.
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    let response = next.call(req).await?.map_into_boxed_body();
    let status = response.status();
    let limit = response.response().extensions().get::<LimitHit>().copied();
    if let Some(state) = response
        .request()
        .app_data::<actix_web::web::Data<super::AppState>>()
    {
        if status == StatusCode::TOO_MANY_REQUESTS {
            state.metrics.rate_limited.inc();
        }
        if let Some(LimitHit(name)) = limit {
            state.metrics.limits_hit.inc(&[name]);
        }
    }
    let described = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| !t.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || described {
        return Ok(response);
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body_too_large",
            "The request body is larger than this endpoint accepts.",
        ),
        StatusCode::BAD_REQUEST => ApiError::bad_request("invalid_body", "The request could not be read."),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::not_found("not_found", "There is nothing at this path.")
        }
        _ if status.is_server_error() => ApiError::internal(),
        _ => ApiError::new(status, "invalid_request", "The request could not be served."),
    };
    let (req, _) = response.into_parts();
    Ok(ServiceResponse::new(req, error.error_response()))
}
