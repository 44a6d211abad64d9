//! Logging: text or JSON lines on stderr (the journal), and a rate limit on warnings
//! and errors so a misbehaving initiator or a dead S3 cannot flood the journal.
//!
//! The limit is per kind (the event's call site) and peer (the `peer` field of the
//! connection's span, or none): [`BURST`] events per [`WINDOW`], then silence until
//! the window ends; the first event of the next window is preceded by one line
//! saying how many similar messages were suppressed. Info and below are not
//! limited: they are never emitted per command.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Events of one kind and peer let through per window.
pub const BURST: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(10);
/// Kinds x peers tracked at once; past it, the oldest windows are forgotten (a
/// flood from many peers is still bounded: each gets its burst per window).
const MAX_KEYS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("log format {s:?}: \"text\" or \"json\"")),
        }
    }
}

/// The peer a span (or an ancestor) is about, kept in its extensions.
struct Peer(String);

struct PeerVisitor(Option<String>);

impl Visit for PeerVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "peer" {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            self.0 = Some(s);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "peer" {
            self.0 = Some(value.to_string());
        }
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    seen: u32,
    suppressed: u64,
}

/// The rate-limiting layer.
#[derive(Debug, Default)]
pub struct RateLimit {
    windows: Mutex<HashMap<(Identifier, String), Window>>,
}

/// What to do with one warning.
enum Verdict {
    Pass,
    /// Pass, after saying this many like it were suppressed.
    PassAfter(u64),
    Drop,
}

impl RateLimit {
    fn judge(&self, key: (Identifier, String), now: Instant) -> Verdict {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= MAX_KEYS && !w.contains_key(&key) {
            // Forget closed windows first; if every window is open, the oldest.
            w.retain(|_, v| now.duration_since(v.start) < WINDOW);
            if w.len() >= MAX_KEYS {
                if let Some(oldest) = w
                    .iter()
                    .min_by_key(|(_, v)| v.start)
                    .map(|(k, _)| k.clone())
                {
                    w.remove(&oldest);
                }
            }
        }
        let e = w.entry(key).or_insert(Window {
            start: now,
            seen: 0,
            suppressed: 0,
        });
        if now.duration_since(e.start) >= WINDOW {
            let suppressed = std::mem::take(&mut e.suppressed);
            e.start = now;
            e.seen = 1;
            return match suppressed {
                0 => Verdict::Pass,
                n => Verdict::PassAfter(n),
            };
        }
        e.seen += 1;
        if e.seen <= BURST {
            Verdict::Pass
        } else {
            e.suppressed += 1;
            Verdict::Drop
        }
    }
}

impl<S> Layer<S> for RateLimit
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = PeerVisitor(None);
        attrs.record(&mut v);
        if let (Some(peer), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(Peer(peer));
        }
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == module_path!() {
            return true;
        }
        let peer = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|s| s.extensions().get::<Peer>().map(|p| p.0.clone()))
            })
            .unwrap_or_default();
        match self.judge((meta.callsite(), peer.clone()), Instant::now()) {
            Verdict::Pass => true,
            Verdict::Drop => false,
            Verdict::PassAfter(n) => {
                tracing::warn!(
                    suppressed = n,
                    kind = meta.name(),
                    peer,
                    "{n} similar messages suppressed in the last {} s",
                    WINDOW.as_secs()
                );
                true
            }
        }
    }
}

/// Install the global subscriber: `RUST_LOG` (default info), rate-limited, in
/// `format`, on stderr.
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(RateLimit::default());
    let _ = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_a_summary() {
        let rl = RateLimit::default();
        let id = tracing::callsite::Identifier(&CALLSITE);
        let t0 = Instant::now();
        let key = || (id.clone(), "10.0.0.1:5000".to_string());
        let passed = (0..100)
            .filter(|_| !matches!(rl.judge(key(), t0), Verdict::Drop))
            .count();
        assert_eq!(passed, BURST as usize);
        // Another peer has its own burst.
        assert!(matches!(
            rl.judge((id.clone(), "10.0.0.2:5000".into()), t0),
            Verdict::Pass
        ));
        match rl.judge(key(), t0 + WINDOW) {
            Verdict::PassAfter(n) => assert_eq!(n, 100 - u64::from(BURST)),
            _ => panic!("no summary"),
        }
    }

    #[test]
    fn keys_are_bounded() {
        let rl = RateLimit::default();
        let id = tracing::callsite::Identifier(&CALLSITE);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 100) {
            rl.judge((id.clone(), format!("peer{i}")), t0);
        }
        assert!(rl.windows.lock().unwrap().len() <= MAX_KEYS);
    }

    struct Site;
    static CALLSITE: Site = Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }
}
