//! Text requests in full feature phase: SendTargets discovery and declarations, the
//! exchange of continued requests, and responses split over several PDUs (C bit and
//! Target Transfer Tag) when longer than the initiator's MaxRecvDataSegmentLength.

use bytes::Bytes;

use super::*;
use crate::login::{encode_pairs, parse_pairs, SessionType, TextError};

/// What a SendTargets query should list.
pub struct Discovery<'a> {
    pub session_type: SessionType,
    pub target_name: &'a str,
    /// Advertised portals, each `address:port,tpgt`.
    pub portals: &'a [String],
    /// False when the initiator may not log in to the target (ACL): list nothing.
    pub visible: bool,
}

/// Answer the keys of one (reassembled) text request.
pub fn answer(
    text: &[u8],
    max_keys: usize,
    disc: &Discovery,
    initiator_mrdsl: &mut u32,
) -> Result<Vec<u8>, TextError> {
    let pairs = parse_pairs(text, max_keys)?;
    let mut out = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "SendTargets" => {
                let listed = match (v.as_str(), disc.session_type) {
                    ("All", _) => true,
                    // An empty value asks for the session's own target (normal sessions).
                    ("", SessionType::Normal) => true,
                    ("", SessionType::Discovery) => false,
                    (name, _) => name.eq_ignore_ascii_case(disc.target_name),
                };
                if listed && disc.visible {
                    let mut pairs = vec![("TargetName", disc.target_name.to_string())];
                    for p in disc.portals {
                        pairs.push(("TargetAddress", p.clone()));
                    }
                    encode_pairs(&pairs, &mut out);
                }
            }
            "MaxRecvDataSegmentLength" => {
                if let Some(n) = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (512..=16_777_215).contains(n))
                {
                    *initiator_mrdsl = n;
                } else {
                    encode_pairs(&[(k.as_str(), "Reject")], &mut out);
                }
            }
            _ => encode_pairs(&[(k.as_str(), "NotUnderstood")], &mut out),
        }
    }
    Ok(out)
}

/// A text response still being sent in pieces.
#[derive(Debug)]
pub struct PendingText {
    pub ttt: u32,
    pub itt: u32,
    pub data: Bytes,
    pub sent: usize,
}

/// The one text exchange a session may have in progress (RFC 7143 section 11.10):
/// a request arriving in pieces (C bit) or an answer leaving in pieces. A request
/// with another Initiator Task Tag and the reserved Target Transfer Tag starts a new
/// exchange and discards this one, so an abandoned exchange never leaks into the
/// next.
#[derive(Debug)]
pub enum TextExchange {
    Receiving { itt: u32, ttt: u32, text: Vec<u8> },
    Sending(PendingText),
}

impl TextExchange {
    /// Whether a Text Request with these tags continues this exchange. Pieces of a
    /// request may carry the TTT we acknowledged with or, as some initiators do, the
    /// reserved one with the same ITT.
    pub fn continued_by(&self, itt: u32, ttt: u32) -> bool {
        match self {
            TextExchange::Receiving { itt: i, ttt: t, .. } => {
                *i == itt && (ttt == *t || ttt == crate::pdu::RESERVED_TAG)
            }
            TextExchange::Sending(p) => p.itt == itt && p.ttt == ttt,
        }
    }

    /// Budget bytes it holds.
    pub fn bytes(&self) -> usize {
        match self {
            TextExchange::Receiving { text, .. } => text.len(),
            TextExchange::Sending(p) => p.data.len(),
        }
    }
}

impl FullFeature {
    pub(super) fn text(&mut self, h: &TextRequest, pdu: &Pdu, out: &mut Outbox) {
        let exchange = self.text.take();
        if let Some(x) = &exchange {
            self.budget.release(x.bytes());
        }
        let exchange = exchange.filter(|x| x.continued_by(h.itt, h.ttt));
        if exchange.is_none() && h.ttt != RESERVED_TAG {
            // A continuation of nothing we know (or of an exchange since replaced).
            self.reject(&pdu.raw_bhs, RejectReason::InvalidPduField, out);
            return;
        }
        let mut req = match exchange {
            Some(TextExchange::Sending(p)) => {
                if !pdu.data.is_empty() {
                    self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
                    return;
                }
                self.send_text_chunk(p, out);
                return;
            }
            Some(TextExchange::Receiving { text, .. }) => text,
            // A new request: whatever was in progress is abandoned.
            None => Vec::new(),
        };
        let total = req.len() + pdu.data.len();
        if total > self.settings.max_text_bytes || !self.budget.try_charge(total) {
            self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
            return;
        }
        req.extend_from_slice(&pdu.data);
        if h.cont {
            let ttt = self.fresh_ttt();
            let th = Header::TextResponse(TextResponse {
                final_: false,
                cont: false,
                lun: h.lun,
                itt: h.itt,
                ttt,
                stat_sn: self.next_stat_sn(),
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
            });
            out.push(&th, Bytes::new());
            self.text = Some(TextExchange::Receiving {
                itt: h.itt,
                ttt,
                text: req,
            });
            return;
        }
        self.budget.release(total);
        let target_name = self.port.target_name.clone();
        let portals = Arc::clone(&self.portals);
        let disc = Discovery {
            session_type: self.params.session_type,
            target_name: &target_name,
            portals: &portals,
            visible: self.target_visible,
        };
        let mut mrdsl = self.params.initiator_max_recv_data_segment;
        match text_exchange::answer(&req, self.settings.max_keys, &disc, &mut mrdsl) {
            Ok(answer) => {
                self.params.initiator_max_recv_data_segment = mrdsl;
                let p = PendingText {
                    ttt: RESERVED_TAG,
                    itt: h.itt,
                    data: Bytes::from(answer),
                    sent: 0,
                };
                self.send_text_chunk(p, out);
            }
            Err(e) => {
                warn!(error = %e, "bad text request");
                self.reject(&pdu.raw_bhs, RejectReason::ProtocolError, out);
            }
        }
    }

    pub(super) fn send_text_chunk(&mut self, mut p: PendingText, out: &mut Outbox) {
        let seg = self.params.initiator_max_recv_data_segment as usize;
        let end = (p.sent + seg).min(p.data.len());
        let chunk = p.data.slice(p.sent..end);
        p.sent = end;
        let more = end < p.data.len();
        let ttt = if more { self.fresh_ttt() } else { RESERVED_TAG };
        let th = Header::TextResponse(TextResponse {
            final_: !more,
            cont: more,
            lun: 0,
            itt: p.itt,
            ttt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        });
        out.push(&th, chunk);
        // Whatever is still to send stays charged until the initiator asks for it.
        if more && self.budget.try_charge(p.data.len()) {
            p.ttt = ttt;
            self.text = Some(TextExchange::Sending(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_targets_lists_every_portal() {
        let portals = vec!["127.0.0.1:3260,1".to_string(), "[::1]:3260,1".to_string()];
        let disc = Discovery {
            session_type: SessionType::Discovery,
            target_name: "iqn.t",
            portals: &portals,
            visible: true,
        };
        let mut mrdsl = 8192;
        let out = answer(b"SendTargets=All\0", 8, &disc, &mut mrdsl).unwrap();
        let pairs = parse_pairs(&out, 8).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], ("TargetName".into(), "iqn.t".into()));
        assert_eq!(pairs[2].1, "[::1]:3260,1");
        assert!(answer(b"SendTargets=iqn.other\0", 8, &disc, &mut mrdsl)
            .unwrap()
            .is_empty());
        let out = answer(
            b"MaxRecvDataSegmentLength=4096\0Foo=1\0",
            8,
            &disc,
            &mut mrdsl,
        )
        .unwrap();
        assert_eq!(mrdsl, 4096);
        assert_eq!(parse_pairs(&out, 8).unwrap()[0].1, "NotUnderstood");
        let hidden = Discovery {
            visible: false,
            ..disc
        };
        assert!(answer(b"SendTargets=All\0", 8, &hidden, &mut mrdsl)
            .unwrap()
            .is_empty());
    }
}
