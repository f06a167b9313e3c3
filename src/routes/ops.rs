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
    state.store.ready().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "store": state.store.kind() })))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let m = &state.metrics;
    let counters = [
        ("sessions_created", "Login sessions created.", &m.sessions_created),
        ("scans", "Codes scanned by the mini-program.", &m.scans),
        ("confirmations", "Logins confirmed.", &m.confirmations),
        (
            "cancellations",
            "Logins cancelled on the phone.",
            &m.cancellations,
        ),
        ("redemptions", "Tickets redeemed.", &m.redemptions),
        (
            "websockets_opened",
            "Browser WebSockets opened.",
            &m.websockets_opened,
        ),
        (
            "code_pool_hits",
            "Sessions started from a pooled code.",
            &m.pool_hits,
        ),
        (
            "code_pool_misses",
            "Sessions of pooling connections whose code was made on the request path.",
            &m.pool_misses,
        ),
        (
            "code_pool_refilled",
            "Codes fetched and branded into a pool.",
            &m.pool_refilled,
        ),
        (
            "code_pool_refill_errors",
            "Failed pool refills.",
            &m.pool_refill_errors,
        ),
        (
            "code_pool_budget_spent",
            "Refills stopped because the AppID's code budget for the minute was spent.",
            &m.pool_budget_spent,
        ),
        (
            "rate_limited",
            "Requests refused by a rate limit (429).",
            &m.rate_limited,
        ),
        (
            "code_jpeg_conversions",
            "Codes converted to JPEG (once per session).",
            &m.jpeg_conversions,
        ),
    ];
    let mut out = String::new();
    for (name, help, counter) in counters {
        let name = format!("qrlogin_{name}_total");
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            counter.get()
        );
    }
    m.render_families(&mut out);
    let gauges = [
        (
            "open_websockets",
            "Browser WebSockets open on this instance.",
            state.caps.open_websockets(),
        ),
        (
            "open_long_polls",
            "Long-polls waiting on this instance.",
            state.caps.open_long_polls(),
        ),
    ];
    for (name, help, value) in gauges {
        let name = format!("qrlogin_{name}");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP qrlogin_waiting_sessions Sessions with a browser waiting on this instance.\n\
         # TYPE qrlogin_waiting_sessions gauge\nqrlogin_waiting_sessions {}",
        state.hub.waiting()
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
