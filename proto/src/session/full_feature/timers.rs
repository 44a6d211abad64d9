//! The session's timers: idle limits and NOP-In pings, as deadlines the
//! connection reports through `poll_timeout` and runs in `handle_timeout`.

use super::*;

impl FullFeature {
    pub(super) fn idle_limit(&self) -> Option<Duration> {
        match self.params.session_type {
            SessionType::Normal => self.settings.idle_timeout,
            SessionType::Discovery => self.settings.discovery_idle_timeout,
        }
    }

    /// When [`Self::handle_timeout`] has something to do: the idle limit (only with
    /// no command running), the deadline of an unanswered ping, or the next ping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self
            .idle_limit()
            .filter(|_| self.tasks.is_empty())
            .map(|l| self.last_work + l);
        let ping = match self.ping {
            Some((_, sent)) => Some(sent + self.settings.nop_timeout),
            None => self.settings.nop_interval.map(|i| self.last_rx + i),
        };
        match (idle, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers due at `now`: close an idle session, give up on a peer that does not
    /// answer its ping, or ping one that has gone quiet. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if let Some(limit) = self.idle_limit() {
            let idle = now.saturating_duration_since(self.last_work);
            if idle >= limit && self.tasks.is_empty() {
                out.abort(format!("idle for {} s (idle timeout)", idle.as_secs()));
                return;
            }
        }
        if let Some((_, sent)) = self.ping {
            if now.saturating_duration_since(sent) >= self.settings.nop_timeout {
                out.abort("NOP-In ping not answered");
            }
            return;
        }
        let Some(interval) = self.settings.nop_interval else {
            return;
        };
        if now.saturating_duration_since(self.last_rx) >= interval {
            let ttt = self.fresh_ttt();
            self.ping = Some((ttt, now));
            let h = Header::NopIn(NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            });
            out.push(&h, Bytes::new());
        }
    }
}
