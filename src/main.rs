//! `qrlogin-relay`: the sandbox, the simulator alone, or the production server.

use qrlogin_relay::config::Settings;
use qrlogin_relay::sandbox::{SANDBOX_APPID, sandbox_settings};
use qrlogin_relay::startup::{Application, simulator_server};
use qrlogin_relay::telemetry;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  qrlogin-relay sandbox [--listen ADDR] [--redis URL] [--wechat-api-base URL] [--backend-secret SECRET]
  qrlogin-relay wechat-sim [--listen ADDR]
  qrlogin-relay serve --config FILE";

enum Command {
    Sandbox {
        listen: String,
        redis: Option<String>,
        wechat_api_base: Option<String>,
        backend_secret: String,
    },
    Simulator {
        listen: String,
    },
    Serve {
        config: PathBuf,
    },
}

/// Reads `--flag value` pairs, refusing flags the command does not take.
fn flags(args: &[String], allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !allowed.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag:?} (see --help)"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        out.insert(flag.trim_start_matches("--").to_owned(), value.clone());
    }
    Ok(out)
}

fn parse(args: &[String]) -> Result<Command, String> {
    let (command, rest) = args.split_first().ok_or("no command given (see --help)")?;
    match command.as_str() {
        "sandbox" => {
            let mut f = flags(
                rest,
                &["--listen", "--redis", "--wechat-api-base", "--backend-secret"],
            )?;
            Ok(Command::Sandbox {
                listen: f.remove("listen").unwrap_or_else(|| "127.0.0.1:8080".into()),
                redis: f.remove("redis"),
                wechat_api_base: f.remove("wechat-api-base"),
                backend_secret: f.remove("backend-secret").unwrap_or_else(|| "sandbox".into()),
            })
        }
        "wechat-sim" => {
            let mut f = flags(rest, &["--listen"])?;
            Ok(Command::Simulator {
                listen: f.remove("listen").unwrap_or_else(|| "127.0.0.1:8090".into()),
            })
        }
        "serve" => {
            let mut f = flags(rest, &["--config"])?;
            let config = f.remove("config").ok_or("serve needs --config FILE")?;
            Ok(Command::Serve {
                config: config.into(),
            })
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
        Command::Sandbox {
            listen,
            redis,
            wechat_api_base,
            backend_secret,
        } => sandbox_settings(listen, redis, wechat_api_base, backend_secret),
        Command::Serve { config } => Settings::from_file(&config).map_err(|e| e.to_string())?,
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

#[allow(clippy::print_stdout)] // --help prints to stdout, as CLIs do
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
    telemetry::init();
    let result = actix_web::rt::System::new().block_on(run(command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qrlogin-relay: {message}");
            ExitCode::FAILURE
        }
    }
}
