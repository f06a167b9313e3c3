//! Operations: liveness, readiness and Prometheus metrics.

use super::AppState;
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use std::fmt::Write;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "store": state.store.kind() })))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    let counters = [
        (
            "qrlogin_sessions_created_total",
            "Login sessions created.",
            m.sessions_created.get(),
        ),
        (
            "qrlogin_scans_total",
            "Codes scanned by the mini-program.",
            m.scans.get(),
        ),
        (
            "qrlogin_confirmations_total",
            "Logins confirmed.",
            m.confirmations.get(),
        ),
        (
            "qrlogin_cancellations_total",
            "Logins cancelled on the phone.",
            m.cancellations.get(),
        ),
        (
            "qrlogin_redemptions_total",
            "Tickets redeemed.",
            m.redemptions.get(),
        ),
        (
            "qrlogin_websockets_opened_total",
            "Browser WebSockets opened.",
            m.websockets_opened.get(),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP qrlogin_waiting_sessions Sessions with a browser waiting on this instance.\n# TYPE qrlogin_waiting_sessions gauge\nqrlogin_waiting_sessions {}",
        state.hub.waiting()
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
