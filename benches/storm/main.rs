//! s3lun-storm: boot storms from one process, for benchmarks and their tests.
//!
//! - `run`: N initiator sessions (discovery, login with distinct names and ISIDs,
//!   NOP answers) each replaying a recorded boot trace with its causality and think
//!   times, checking every byte against the image; prints one JSON summary.
//! - `shape`: a proxy in front of an S3 server adding first-byte latency and a shared
//!   bandwidth cap, counting requests and bytes.
//! - `record`: a proxy between a real initiator and a target that writes the trace.
//! - `info`: what a trace touches (for the physical limit of a cold storm).
//!
//! See benches/storm.sh, which runs s3lun against tgt with all of these.

mod latency;
mod link;
mod node;
mod procwatch;
mod record;
mod run;
mod scatter;
mod shape;
mod trace;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Boot storms against an iSCSI target, and the tools to stage them"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot N nodes at once from one trace; print a JSON summary.
    Run {
        /// Target portal, host:port.
        #[arg(long)]
        portal: String,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        lun: u64,
        #[arg(long)]
        trace: PathBuf,
        /// The image the LUN serves: every byte read is compared with it.
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Spread the nodes' starts over this many milliseconds.
        #[arg(long, default_value_t = 0)]
        ramp_ms: u64,
        /// Skip the SendTargets discovery session each node makes first.
        #[arg(long)]
        no_discovery: bool,
        /// Keep every node logged in until all have booted (and the probes ran).
        #[arg(long)]
        hold: bool,
        /// Fresh logins timed once every node has booted.
        #[arg(long, default_value_t = 0)]
        probes: u32,
        /// With --hold: stay logged in this many seconds more (answering NOPs).
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
        /// Target processes to watch (CPU, RSS, descriptors); repeatable.
        #[arg(long = "watch-pid")]
        watch: Vec<u32>,
        #[arg(long, default_value = "iqn.2026-12.org.s3lun:storm")]
        initiator_prefix: String,
        #[arg(long, default_value_t = 30)]
        connect_timeout_secs: u64,
    },
    /// Shape an S3 server's answers: first-byte latency and a shared bandwidth.
    Shape {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value_t = 15)]
        latency_ms: u64,
        /// Megabytes (10^6) per second for all answers together; 0: unlimited.
        #[arg(long, default_value_t = 100.0)]
        mbps: f64,
        /// Rewritten with {"requests","bytes","connections"} as they change.
        #[arg(long)]
        stats: Option<PathBuf>,
    },
    /// Relay an initiator to a target, writing the READs it issues as a trace.
    Record {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        out: PathBuf,
        /// The served image's size, written into the trace.
        #[arg(long, default_value_t = 0)]
        image_bytes: u64,
    },
    /// What a trace reads: JSON with reads, bytes, unique bytes, dependent misses,
    /// extent, duration.
    Info { trace: PathBuf },
    /// Write a boot-like scattered trace of a site-sized image, and the image (sparse:
    /// bytes where the trace reads).
    Scatter {
        #[arg(long)]
        image_bytes: u64,
        #[arg(long, default_value_t = 200)]
        files: u32,
        /// Megabytes (10^6) the files add up to.
        #[arg(long, default_value_t = 110)]
        file_mb: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        trace: PathBuf,
        #[arg(long)]
        image: PathBuf,
        /// Also write a trace that reads the first this many MB front to back.
        #[arg(long)]
        sequential_mb: Option<u64>,
        #[arg(long)]
        sequential_trace: Option<PathBuf>,
    },
    /// One session's 4 KiB random reads, one at a time, timed (p50, p99), while
    /// scrapers fetch an HTTP URL: JSON.
    Latency {
        #[arg(long)]
        portal: String,
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        lun: u64,
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 2000)]
        reads: u32,
        /// host:port/path to fetch, e.g. 127.0.0.1:9100/metrics.
        #[arg(long)]
        scrape: Option<String>,
        #[arg(long, default_value_t = 2)]
        scrapers: u32,
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
}

fn load_trace(path: &PathBuf) -> anyhow::Result<trace::Trace> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    trace::Trace::parse(&text).with_context(|| format!("trace {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                portal,
                target,
                lun,
                trace,
                image,
                nodes,
                ramp_ms,
                no_discovery,
                hold,
                probes,
                hold_secs,
                watch,
                initiator_prefix,
                connect_timeout_secs,
            } => {
                let trace = load_trace(&trace)?;
                let file = std::fs::File::open(&image)
                    .with_context(|| format!("opening {}", image.display()))?;
                // SAFETY: the image is a read-only input the run does not change; a
                // concurrent writer would only make reads mismatch, which is reported.
                let map = unsafe { memmap2::Mmap::map(&file) }
                    .with_context(|| format!("mapping {}", image.display()))?;
                let largest = trace.reads.iter().map(|r| r.blocks as u64 * 512).max();
                anyhow::ensure!(
                    map.len() as u64 >= largest.unwrap_or(0),
                    "the image is smaller than the trace's largest read"
                );
                let plan = Arc::new(node::Plan {
                    addr: portal,
                    target,
                    lun,
                    steps: trace.steps(),
                    trace,
                    image: Arc::new(map),
                    discovery: !no_discovery,
                    connect_timeout: Duration::from_secs(connect_timeout_secs),
                });
                let storm = run::Storm {
                    nodes,
                    ramp: Duration::from_millis(ramp_ms),
                    hold,
                    hold_for: Duration::from_secs(hold_secs),
                    probes,
                    prefix: initiator_prefix,
                    watch,
                };
                let summary = run::storm(plan, &storm).await;
                println!("{summary}");
                let bad = summary["errors"].as_u64().unwrap_or(1)
                    + summary["wrong_reads"].as_u64().unwrap_or(1);
                anyhow::ensure!(
                    bad == 0,
                    "the storm had errors: {}",
                    summary["first_errors"]
                );
                Ok(())
            }
            Cmd::Shape {
                listen,
                upstream,
                latency_ms,
                mbps,
                stats,
            } => {
                let shape = shape::Shape {
                    latency: Duration::from_millis(latency_ms),
                    bandwidth: mbps * 1e6,
                };
                shape::serve(&listen, &upstream, shape, stats).await
            }
            Cmd::Record {
                listen,
                upstream,
                out,
                image_bytes,
            } => record::serve(&listen, &upstream, out, image_bytes).await,
            Cmd::Latency {
                portal,
                target,
                lun,
                image,
                reads,
                scrape,
                scrapers,
                every_ms,
            } => {
                let bytes = std::fs::read(&image)
                    .with_context(|| format!("reading {}", image.display()))?;
                let scrape = scrape.map(|u| match u.split_once('/') {
                    Some((a, p)) => (a.to_string(), format!("/{p}")),
                    None => (u, "/".to_string()),
                });
                let l = latency::Latency {
                    addr: portal,
                    target,
                    lun,
                    reads,
                    scrape,
                    scrapers,
                    every: Duration::from_millis(every_ms),
                };
                println!("{}", latency::run(l, &bytes).await?);
                Ok(())
            }
            Cmd::Scatter {
                image_bytes,
                files,
                file_mb,
                seed,
                trace,
                image,
                sequential_mb,
                sequential_trace,
            } => {
                if let (Some(mb), Some(path)) = (sequential_mb, &sequential_trace) {
                    let t = scatter::sequential(image_bytes, mb * 1_000_000);
                    std::fs::write(path, t.encode())
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                let t = scatter::Scatter {
                    image_bytes,
                    files,
                    file_bytes: file_mb * 1_000_000,
                    seed,
                }
                .trace();
                std::fs::write(&trace, t.encode())
                    .with_context(|| format!("writing {}", trace.display()))?;
                scatter::write_image(&t, &image, seed)
            }
            Cmd::Info { trace } => {
                let t = load_trace(&trace)?;
                println!(
                    "{}",
                    serde_json::json!({
                        "reads": t.reads.len(),
                        "bytes_read": t.bytes_read(),
                        "unique_bytes": t.unique_bytes(),
                        "dependent_misses": t.dependent_misses(),
                        "extent": t.extent(),
                        "image_bytes": t.image_bytes,
                        "duration_us": t.duration_us(),
                    })
                );
                Ok(())
            }
        }
    })
}
