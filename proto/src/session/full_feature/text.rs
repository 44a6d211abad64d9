//! Text requests in full feature phase: the exchange (continued requests and
//! responses split by the initiator's MaxRecvDataSegmentLength) around
//! [`crate::session::text_exchange::answer`].

use super::*;

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
