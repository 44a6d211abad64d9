//! The `s3lun` command line: parse, then hand each subcommand to the library
//! (`s3lun::cli` holds the flags, `s3lun::control` serving, `s3lun::tools` the rest).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use s3lun::cli::{
    load, status_address, CacheOp, Cli, Cmd, GenerateOp, LunmapOp, Output, ProfileOp,
    PACKAGED_CONFIG,
};
use s3lun::config::Config;
use s3lun::control::start::announce;
use s3lun::profile_tool;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A config's log format applies from its first line; its errors are plain text.
    let serving = match &cli.cmd {
        Cmd::Serve(args) => match s3lun::cli::effective_config(args) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                s3lun::logging::init(s3lun::logging::Format::Text);
                return Err(e);
            }
        },
        _ => None,
    };
    s3lun::logging::init(
        serving
            .as_ref()
            .map_or(Default::default(), |c| c.log_format),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = run(cli.cmd, serving, &rt);
    // Dropping a runtime waits for every blocking task without end: one stuck on a
    // disk or a channel that an abandoned read still holds would keep a stopped
    // process alive. What is left after the command is done gets a moment (the
    // serve loop has already spent the rest of its exit time).
    rt.shutdown_timeout(s3lun::control::run::RUNTIME_GRACE);
    result
}

/// Run one subcommand on `rt`.
fn run(cmd: Cmd, serving: Option<Config>, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve(args) => match serving {
            Some(cfg) => rt.block_on(s3lun::control::serve(*args, cfg)),
            None => Ok(()),
        },
        Cmd::Warm {
            config,
            images,
            parallel,
        } => rt.block_on(s3lun::warm::warm(&load(&config)?, &images, parallel)),
        Cmd::Catalog { config, output } => rt.block_on(s3lun::tools::catalog(
            &load(&config)?,
            output == Output::Json,
        )),
        Cmd::Admin {
            socket,
            config,
            command,
        } => {
            let configured = match &config {
                Some(_) => {
                    let cfg = load(&config)?;
                    let port = cfg
                        .listen
                        .first()
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok().map(|s| s.port()));
                    let derived = port.filter(|&p| p != 0).map(s3lun::admin::default_path);
                    cfg.admin_socket.or(derived)
                }
                None => None,
            };
            let socket = s3lun::admin::find(socket, configured)?;
            let answer = s3lun::admin::call(&socket, &command)?;
            announce(&answer);
            if answer.starts_with("error") {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Status {
            config,
            address,
            output,
            json,
        } => {
            let json = json || output == Output::Json;
            let addr = match address {
                Some(a) => a,
                None => {
                    let packaged = PathBuf::from(PACKAGED_CONFIG);
                    let config = config.or_else(|| packaged.exists().then_some(packaged));
                    status_address(&load(&config)?)?
                }
            };
            let body = s3lun::metrics::status::fetch(&addr)?;
            if json {
                announce(body.trim_end());
            } else {
                let st: s3lun::metrics::status::Status =
                    serde_json::from_str(&body).context("reading /status")?;
                announce(st.tree().trim_end());
            }
            Ok(())
        }
        Cmd::Check { config } => {
            let problems = rt.block_on(s3lun::check::check(&config));
            for p in &problems {
                announce(&format!("problem: {p}"));
            }
            if !problems.is_empty() {
                let n = problems.len();
                let s = if n == 1 { "" } else { "s" };
                announce(&format!("{}: {n} problem{s}", config.display()));
                std::process::exit(1);
            }
            announce(&format!("{}: ok", config.display()));
            Ok(())
        }
        Cmd::Index {
            config,
            image,
            chunk_size,
            etag,
            output,
        } => rt.block_on(s3lun::tools::index(
            &load(&config)?,
            &image,
            chunk_size,
            etag.as_deref(),
            output.as_deref(),
        )),
        Cmd::Lunmap { config, op } => {
            let retire = match op {
                LunmapOp::Show => None,
                LunmapOp::Retire { number } => Some(number),
            };
            rt.block_on(s3lun::tools::lunmap(&load(&config)?, retire))
        }
        Cmd::Generate { what } => match what {
            GenerateOp::Man { dir } => s3lun::generate::man(&dir),
            GenerateOp::Completions { dir } => s3lun::generate::completions(&dir),
        },
        Cmd::Profile { config, op } => {
            let cfg = load(&config)?;
            rt.block_on(async {
                match op {
                    ProfileOp::Show { image, output } => {
                        profile_tool::show(&cfg, &image, output).await
                    }
                    ProfileOp::Drop { image } => profile_tool::drop(&cfg, &image).await,
                }
            })
        }
        Cmd::Cache { config, op } => {
            let cfg = load(&config)?;
            match op {
                CacheOp::Stats => s3lun::tools::cache_stats(&cfg),
                CacheOp::Verify => s3lun::tools::cache_verify(&cfg, rt.handle().clone()),
                CacheOp::Purge { key } => s3lun::tools::cache_purge(&cfg, key.as_deref()),
            }
        }
    }
}
