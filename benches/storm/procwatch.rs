//! What a storm costs the target: its processes' CPU seconds over the run and their
//! peak resident memory and open descriptors, sampled from /proc every 100 ms.

use std::time::Duration;

use serde_json::json;

#[derive(Default, Clone, Copy)]
struct Sample {
    cpu_ticks: u64,
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(Sample {
        cpu_ticks,
        rss_kib,
        fds,
    })
}

/// The watched processes, summed.
fn total(pids: &[u32]) -> Sample {
    pids.iter()
        .filter_map(|&p| sample(p))
        .fold(Sample::default(), |a, b| Sample {
            cpu_ticks: a.cpu_ticks + b.cpu_ticks,
            rss_kib: a.rss_kib + b.rss_kib,
            fds: a.fds + b.fds,
        })
}

pub struct Watch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Sample, Sample, Sample)>,
}

impl Watch {
    pub fn start(pids: &[u32]) -> Watch {
        let pids = pids.to_vec();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let first = total(&pids);
            let mut peak = first;
            let mut last = first;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                last = total(&pids);
                peak.rss_kib = peak.rss_kib.max(last.rss_kib);
                peak.fds = peak.fds.max(last.fds);
            }
            (first, peak, last)
        });
        Watch { stop, task }
    }

    pub async fn stop(self) -> serde_json::Value {
        let _ = self.stop.send(());
        let (first, peak, last) = self.task.await.unwrap_or_default();
        // SAFETY: sysconf reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        json!({
            "cpu_s": (last.cpu_ticks.saturating_sub(first.cpu_ticks)) as f64 / hz,
            "peak_rss_mib": peak.rss_kib / 1024,
            "peak_fds": peak.fds,
        })
    }
}
