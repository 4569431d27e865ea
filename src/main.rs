//! The `reaper` binary: parse the command line, set up logging, and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

use reaper::cli::{self, Cli, Command, ConfigCommand};
use reaper::config::{self, Config, ConfigFile, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let once = args.once;
                let socket = cli.socket.clone();
                let resolve = move || -> Result<Config, String> {
                    let file = match &args.config {
                        Some(path) => Some(ConfigFile::load(path).map_err(|e| e.to_string())?),
                        None => None,
                    };
                    Config::resolve(file, cli::serve_overrides(&args, socket.clone()))
                        .map_err(|e| e.to_string())
                };
                let config = match resolve() {
                    Ok(c) => c,
                    Err(e) => return fail(1, &e),
                };
                init_tracing(config.log_format);
                match reaper::daemon::run(config, once, Box::new(resolve)).await {
                    Ok(code) => code,
                    Err(e) => fail(1, &e),
                }
            }
            Command::Config(ConfigCommand::Check { file }) => {
                match ConfigFile::load(&file)
                    .and_then(|f| Config::resolve(Some(f), ConfigFile::default()))
                {
                    Ok(_) => {
                        println!("{}: ok", file.display());
                        0
                    }
                    Err(e) => fail(1, &e.to_string()),
                }
            }
            Command::Completion { shell } => print_bytes(&cli::completion(shell)),
            Command::Man => match cli::man_page() {
                Ok(page) => print_bytes(&page),
                Err(e) => fail(1, &format!("cannot render the man page: {e}")),
            },
            Command::Run(args) => {
                let socket = cli.socket.unwrap_or_else(config::default_socket_path);
                cli::run::run(&socket, *args).await
            }
            command => {
                let socket = cli
                    .socket
                    .clone()
                    .unwrap_or_else(config::default_socket_path);
                match cli::run_client(&socket, command).await {
                    Ok(()) => 0,
                    Err(f) => fail(f.code, &f.message),
                }
            }
        }
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn print_bytes(bytes: &[u8]) -> i32 {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => 0,
        Err(e) => fail(1, &format!("cannot write to stdout: {e}")),
    }
}

fn fail(code: i32, message: &str) -> i32 {
    eprintln!("error: {message}");
    code
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REAPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
