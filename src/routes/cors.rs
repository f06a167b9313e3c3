//! Which web pages may use the PC endpoints (DESIGN §3, §6). A connection's `allowed_origins`
//! may call them from their pages (CORS), open its WebSocket and frame its hosted page; the
//! relay's own pages always may. A request without an `Origin` did not come from a page's
//! script, so it is not a CORS matter (curl, backends, `<img>`).

use super::AppState;
use crate::config::Connection;
use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use std::sync::Arc;

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The paths a website's page calls: login sessions, public connection details, and the OIDC
/// token and userinfo endpoints (a public client in the browser).
fn is_page_api(path: &str) -> bool {
    path.starts_with("/v1/login-sessions")
        || path.starts_with("/v1/connections/")
        || path == "/oauth2/token"
        || path == "/oauth2/userinfo"
}

pub fn request_origin(req: &HttpRequest) -> Option<&str> {
    req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Whether `origin` is this relay itself, as configured or as the browser addressed it.
pub fn is_own_origin(state: &AppState, req: &HttpRequest, origin: &str) -> bool {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    origin == state.public_base_url
        || (crate::config::is_origin(origin) && origin.split_once("://").map(|(_, h)| h) == host)
}

/// The connection a request turned out to concern: its `allowed_origins` then decide the
/// response's CORS headers.
#[derive(Clone)]
struct Concerns(Arc<Connection>);

/// Ties the response's CORS headers to `connection` (its allowed origins may read it).
pub fn concerns(req: &HttpRequest, connection: &Arc<Connection>) {
    req.extensions_mut().insert(Concerns(connection.clone()));
}

/// Refuses (403 `origin_not_allowed`) a page of an origin `connection` does not allow, and
/// ties the response's CORS headers to that connection.
pub fn check_origin(
    state: &AppState,
    req: &HttpRequest,
    connection: &Arc<Connection>,
) -> Result<(), ApiError> {
    concerns(req, connection);
    match request_origin(req) {
        Some(origin) if !is_own_origin(state, req, origin) && !connection.allows_origin(origin) => {
            Err(ApiError::forbidden(
                "origin_not_allowed",
                "Pages of this origin may not use this connection; the operator lists allowed origins.",
            ))
        }
        _ => Ok(()),
    }
}

/// Answers CORS preflights for the page API and adds `Access-Control-Allow-Origin` (the one
/// allowed origin, never `*`) and `Vary: Origin` to its responses.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(state), true) = (state, is_page_api(req.path())) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let origin_text = || origin.as_ref().and_then(|o| o.to_str().ok());

    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut response = match origin_text().filter(|o| state.connections.any_allows_origin(o)) {
            Some(_) => HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Authorization, Content-Type",
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS))
                .finish(),
            None => ApiError::forbidden(
                "origin_not_allowed",
                "Pages of this origin may not use this relay.",
            )
            .error_response(),
        };
        allow(&mut response, &state, None, origin.as_ref());
        return Ok(req.into_response(response).map_into_right_body());
    }

    let mut response = next.call(req).await?;
    let concerns = response.request().extensions().get::<Concerns>().cloned();
    allow(
        response.response_mut(),
        &state,
        concerns.as_ref(),
        origin.as_ref(),
    );
    Ok(response.map_into_left_body())
}

fn allow<B>(
    response: &mut HttpResponse<B>,
    state: &AppState,
    concerns: Option<&Concerns>,
    origin: Option<&HeaderValue>,
) {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    let allowed = origin.to_str().is_ok_and(|o| match concerns {
        Some(Concerns(connection)) => connection.allows_origin(o),
        None => state.connections.any_allows_origin(o),
    });
    if allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After, ETag"),
        );
    }
}
