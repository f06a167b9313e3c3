//! `GET /sandbox`: one page that plays a website using `qrlogin.js` (inline widget, popup and
//! hosted page), the phone (scan, confirm, cancel as any WeChat user) and the website backend
//! (redeem). Its script is a file of its own, so the page runs under a strict CSP too.

use crate::markup::escape_html;
use crate::routes::AppState;
use actix_web::http::header;
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/sandbox", web::get().to(page))
        .route("/sandbox/sandbox.js", web::get().to(script))
        .route("/sandbox/sandbox.css", web::get().to(style));
}

async fn page(state: web::Data<AppState>) -> HttpResponse {
    // The page is itself a registered callback URL, for the hosted page's redirect and popup.
    let callback = format!("{}/sandbox", state.public_base_url);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data: https:; frame-src 'self'; object-src 'none'; base-uri 'none'",
        ))
        .body(include_str!("../../assets/sandbox.html").replace("{{callback}}", &escape_html(&callback)))
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/sandbox.js"),
    )
}

async fn style() -> HttpResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/sandbox.css"),
    )
}
