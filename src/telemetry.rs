//! Tracing, set up once by the binary. `RUST_LOG` filters (default `info`);
//! `QRLOGIN_LOG_FORMAT=json` writes one JSON object per line (for log shippers), with the
//! audit trail under the target `audit`.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = if std::env::var("QRLOGIN_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
