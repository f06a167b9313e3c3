//! What a website embeds or sends its visitors to: the hosted login page (`/login`), the widget
//! it runs (`/qrlogin.js`, `/qrlogin.css`, also for sites that mount it inline), and the public
//! details of a connection the widget shows (name, logo, companion).

use super::{AppState, cors};
use crate::config::{Connection, origin_of};
use crate::error::ApiError;
use crate::markup::escape_html;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use std::collections::HashMap;
use std::io::Cursor;

const LOGIN_PAGE: &str = include_str!("../../assets/login.html");
const WIDGET_JS: &str = include_str!("../../assets/qrlogin.js");
const WIDGET_CSS: &str = include_str!("../../assets/qrlogin.css");
/// The logo the widget and the mini-program show beside the tenant's name.
const LOGO_SIDE: u32 = 128;
/// Long enough to be useless for guessing, short enough for any site's `state`.
const MAX_STATE_LEN: usize = 512;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/qrlogin.js", web::get().to(widget_js))
        .route("/qrlogin.css", web::get().to(widget_css))
        .route("/v1/connections/{identifier}", web::get().to(connection_details))
        .route(
            "/v1/connections/{identifier}/logo",
            web::get().to(connection_logo),
        );
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn widget_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", WIDGET_JS)
}

async fn widget_css() -> HttpResponse {
    asset("text/css; charset=utf-8", WIDGET_CSS)
}

/// The page's language: `lang` when it names one we speak, else the browser's first choice.
pub(crate) fn language(asked: Option<&str>, req: &HttpRequest) -> &'static str {
    match asked {
        Some("zh-CN") => "zh-CN",
        Some("en") => "en",
        _ => {
            let accept = req
                .headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start()
                .to_ascii_lowercase();
            if accept.starts_with("zh") { "zh-CN" } else { "en" }
        }
    }
}

/// A hosted-page request that cannot be served: said on a page, never redirected anywhere.
pub(crate) struct PageError {
    status: StatusCode,
    message: &'static str,
}

impl PageError {
    pub(crate) fn bad(message: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

/// `GET /login?connection&redirect_uri&state[&mode=popup][&lang][&response_mode]`.
async fn login_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let lang = language(query.get("lang").map(String::as_str), &req);
    match render_login(&state, &req, &query, lang) {
        Ok(page) => page,
        Err(e) => error_page(e, lang),
    }
}

fn render_login(
    state: &AppState,
    req: &HttpRequest,
    query: &HashMap<String, String>,
    lang: &str,
) -> Result<HttpResponse, PageError> {
    let get = |name: &str| query.get(name).map(String::as_str);
    let connection = state
        .connection(get("connection"))
        .map_err(|_| PageError::bad("No connection has this identifier."))?;
    let redirect_uri = get("redirect_uri").ok_or(PageError::bad("redirect_uri is missing."))?;
    // The relay's own OIDC finish: a refusal on the phone goes back there too (access_denied).
    let oidc = redirect_uri == super::oidc::finish_url(state);
    if !oidc && !connection.allows_callback(redirect_uri) {
        return Err(PageError::bad(
            "This redirect_uri is not registered for this connection; the login page sends nobody there.",
        ));
    }
    let mode = match get("mode") {
        None | Some("redirect") => "redirect",
        Some("popup") => "popup",
        Some(_) => return Err(PageError::bad("mode must be redirect or popup.")),
    };
    let response_mode = match get("response_mode") {
        None | Some("query") => "query",
        Some("form_post") => "form_post",
        Some(_) => return Err(PageError::bad("response_mode must be query or form_post.")),
    };
    let login_state = get("state").unwrap_or_default();
    if login_state.len() > MAX_STATE_LEN {
        return Err(PageError::bad("state is longer than 512 characters."));
    }
    let config = json!({
        "connection": connection.identifier,
        "redirect_uri": redirect_uri,
        "state": login_state,
        "mode": mode,
        "response_mode": response_mode,
        "lang": lang,
        // A refusal on the phone (cancel, account-hook deny) goes back to the OIDC finish as
        // `error=access_denied` instead of offering a new code.
        "refusal_to_redirect": oidc,
    });
    let body = LOGIN_PAGE
        .replace("{{lang}}", lang)
        .replace("{{title}}", &escape_html(&connection.display_name))
        // A JSON data block: `<` escaped so no value can close the element.
        .replace("{{config}}", &config.to_string().replace('<', "\\u003c"));
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let wechat = origin_of(&state.wechat_open_base).unwrap_or("'none'");
    let form_target = origin_of(redirect_uri).unwrap_or("'none'");
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
         connect-src 'self' ws://{host} wss://{host}; frame-src 'self' {wechat}; form-action {form_target}; \
         frame-ancestors {}; base-uri 'none'",
        frame_ancestors(&connection)
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body))
}

/// Pages of the connection's allowed origins may frame the hosted page; nobody else may.
fn frame_ancestors(connection: &Connection) -> String {
    std::iter::once("'self'")
        .chain(connection.allowed_origins.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn error_page(e: PageError, lang: &str) -> HttpResponse {
    let (title, hint) = if lang == "zh-CN" {
        ("无法打开登录页", "请返回原网站重新发起登录。")
    } else {
        (
            "This login page cannot be opened",
            "Go back to the website and start the login again.",
        )
    };
    let body = format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/qrlogin.css"></head>
<body class="qrlogin-hosted"><main class="qrlogin qrlogin-error-page"><h1>{title}</h1><p>{message}</p><p>{hint}</p></main></body></html>"#,
        message = escape_html(e.message),
    );
    HttpResponse::build(e.status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// `GET /v1/connections/{identifier}`: what a login widget shows (public: it is on the code).
async fn connection_details(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let connection = state.connection(Some(&path))?;
    cors::check_origin(&state, &req, &connection)?;
    let base = &state.public_base_url;
    let mut body = json!({
        "identifier": connection.identifier,
        "display_name": connection.display_name,
        "kind": if connection.is_website() { "website" } else { "mini_program" },
        "logo_url": format!("{base}/v1/connections/{}/logo", connection.identifier),
    });
    if let Some(companion) = connection
        .companion
        .as_deref()
        .and_then(|c| state.connections.get(c))
    {
        body["companion"] = json!({
            "identifier": companion.identifier,
            "display_name": companion.display_name,
        });
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(body))
}

/// `GET /v1/connections/{identifier}/logo`: the round logo, as on the code, 128 px PNG (the
/// widget's header and the mini-program's confirm screen).
async fn connection_logo(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let logo = state.connection(Some(&path))?.logo.clone();
    let png = web::block(move || {
        let mut out = Cursor::new(Vec::new());
        logo.round_image(LOGO_SIDE)
            .write_to(&mut out, image::ImageFormat::Png)
            .map(|()| out.into_inner())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot encode a logo");
        ApiError::internal()
    })?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(png))
}
