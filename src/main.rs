//! `qrlogin-relay`: the sandbox, the simulator alone, or the production server.

use qrlogin_relay::config::Settings;
use qrlogin_relay::sandbox::{SANDBOX_APPID, SandboxOptions, sandbox_settings};
use qrlogin_relay::startup::{Application, simulator_server};
use qrlogin_relay::telemetry;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, with its background thread returning freed memory to the system after a few
/// seconds: with the system allocator the memory of sockets that closed stayed with the
/// process (measured side by side in the README, "Scale").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str = "usage:
  qrlogin-relay sandbox [--listen ADDR] [--redis URL] [--wechat-api-base URL] [--backend-secret SECRET]
                        [--session-ttl SECS] [--allow-origin ORIGIN]... [--callback-url URL]...
                        [--admin-token TOKEN]
  qrlogin-relay wechat-sim [--listen ADDR]
  qrlogin-relay serve --config FILE
  qrlogin-relay openapi                 (prints the API's OpenAPI 3.1 document)";

enum Command {
    Sandbox(SandboxOptions),
    Simulator { listen: String },
    Serve { config: PathBuf },
    OpenApi,
}

/// `--flag value` pairs by flag (a repeated flag keeps every value), refusing flags the
/// command does not take.
struct Flags(HashMap<String, Vec<String>>);

impl Flags {
    fn parse(args: &[String], allowed: &[&str]) -> Result<Self, String> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if !allowed.contains(&flag.as_str()) {
                return Err(format!("unknown flag {flag:?} (see --help)"));
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            out.entry(flag.trim_start_matches("--").to_owned())
                .or_default()
                .push(value.clone());
        }
        Ok(Self(out))
    }

    /// The flag's last value.
    fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).and_then(|mut values| values.pop())
    }

    fn remove_all(&mut self, name: &str) -> Vec<String> {
        self.0.remove(name).unwrap_or_default()
    }
}

fn parse(args: &[String]) -> Result<Command, String> {
    let (command, rest) = args.split_first().ok_or("no command given (see --help)")?;
    match command.as_str() {
        "sandbox" => {
            let mut f = Flags::parse(
                rest,
                &[
                    "--listen",
                    "--redis",
                    "--wechat-api-base",
                    "--backend-secret",
                    "--session-ttl",
                    "--allow-origin",
                    "--callback-url",
                    "--admin-token",
                ],
            )?;
            let mut options = SandboxOptions::default();
            if let Some(listen) = f.remove("listen") {
                options.listen = listen;
            }
            options.redis_url = f.remove("redis");
            options.wechat_api_base = f.remove("wechat-api-base");
            if let Some(secret) = f.remove("backend-secret") {
                options.backend_secret = secret;
            }
            if let Some(ttl) = f.remove("session-ttl") {
                options.session_ttl_secs = ttl
                    .parse()
                    .ok()
                    .filter(|t| (1..=3600).contains(t))
                    .ok_or("--session-ttl needs a number of seconds from 1 to 3600")?;
            }
            if let Some(token) = f.remove("admin-token") {
                options.admin_token = token;
            }
            options.allowed_origins.extend(f.remove_all("allow-origin"));
            options.callback_urls.extend(f.remove_all("callback-url"));
            Ok(Command::Sandbox(options))
        }
        "wechat-sim" => {
            let mut f = Flags::parse(rest, &["--listen"])?;
            Ok(Command::Simulator {
                listen: f.remove("listen").unwrap_or_else(|| "127.0.0.1:8090".into()),
            })
        }
        "serve" => {
            let mut f = Flags::parse(rest, &["--config"])?;
            let config = f.remove("config").ok_or("serve needs --config FILE")?;
            Ok(Command::Serve {
                config: config.into(),
            })
        }
        "openapi" => {
            Flags::parse(rest, &[])?;
            Ok(Command::OpenApi)
        }
        other => Err(format!("unknown command {other:?} (see --help)")),
    }
}

fn bind(listen: &str) -> Result<TcpListener, String> {
    TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))
}

async fn run(command: Command) -> Result<(), String> {
    let settings = match command {
        Command::Simulator { listen } => {
            let listener = bind(&listen)?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let server = simulator_server(listener).map_err(|e| e.to_string())?;
            eprintln!("WeChat simulator listening on http://{addr} (sandbox AppID {SANDBOX_APPID})");
            return server.await.map_err(|e| e.to_string());
        }
        Command::Sandbox(options) => sandbox_settings(options),
        Command::Serve { config } => Settings::from_file(&config).map_err(|e| e.to_string())?,
        Command::OpenApi => return Ok(()), // printed by main, without a runtime
    };
    let sandbox = settings.mount_simulator;
    let listener = bind(&settings.listen)?;
    let app = Application::build(settings, listener)
        .await
        .map_err(|e| e.to_string())?;
    let base = app.public_base_url().to_owned();
    eprintln!("qrlogin-relay listening on {base}");
    if sandbox {
        eprintln!("WeChat simulator at {base}/sandbox/wechat (sandbox AppID {SANDBOX_APPID})");
    }
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

#[allow(clippy::print_stdout)] // --help and openapi print to stdout, as CLIs do
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help" || a == "help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let command = match parse(&args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("qrlogin-relay: {message}");
            return ExitCode::from(2);
        }
    };
    if let Command::OpenApi = command {
        print!("{}", qrlogin_relay::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    telemetry::init();
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start the allocator's background thread; freed memory is returned less promptly");
    }
    let result = actix_web::rt::System::new().block_on(run(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qrlogin-relay: {message}");
            ExitCode::FAILURE
        }
    }
}
