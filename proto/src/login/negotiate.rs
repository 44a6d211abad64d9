//! The negotiator: answers each key the initiator offers by its row of
//! [`super::keys`], recording the result in the session's parameters.

use super::keys::{self, Rule};
use super::params::{NegotiationPrefs, SessionParams};
use super::LoginError;

/// Negotiates one login (or a Text renegotiation) against our preferences.
#[derive(Debug, Clone)]
pub struct Negotiator {
    pub prefs: NegotiationPrefs,
    pub params: SessionParams,
    answered: Vec<String>,
}

fn parse_number(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
        v.parse().ok()
    } else {
        None
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

fn in_range(v: &str, lo: u64, hi: u64) -> Option<u64> {
    parse_number(v).filter(|n| (lo..=hi).contains(n))
}

/// The first value of the initiator's list that we also accept.
fn pick_from_list(offer: &str, ours: &[String]) -> Option<String> {
    offer
        .split(',')
        .find(|o| ours.iter().any(|w| w == o))
        .map(str::to_string)
}

/// Answers the initiator uses to reply to our offers; not new offers.
fn is_reply_value(v: &str) -> bool {
    matches!(v, "NotUnderstood" | "Irrelevant" | "Reject")
}

impl Negotiator {
    pub fn new(prefs: NegotiationPrefs) -> Negotiator {
        let params = SessionParams {
            target_max_recv_data_segment: prefs.max_recv_data_segment,
            ..SessionParams::default()
        };
        Negotiator {
            prefs,
            params,
            answered: Vec::new(),
        }
    }

    /// Handle one key from the initiator by the rule of its row in the key table.
    /// Returns the value to answer with, or `None` where the key is a declaration
    /// that needs no answer.
    pub fn offer(&mut self, key: &str, value: &str) -> Result<Option<String>, LoginError> {
        if is_reply_value(value) {
            return Ok(None);
        }
        let p = &mut self.params;
        let prefs = &self.prefs;
        let reject = "Reject".to_string();
        let answer = match keys::lookup(key).map(|k| &k.rule) {
            Some(Rule::Declaration(record)) => {
                record(p, value)?;
                return Ok(None);
            }
            Some(Rule::List { ours, record }) => match pick_from_list(value, ours(prefs)) {
                Some(v) => {
                    record(p, &v);
                    v
                }
                None => reject,
            },
            Some(Rule::Number { lo, hi, result }) => match in_range(value, *lo, *hi) {
                Some(n) => match result(p, prefs, n) {
                    Some(v) => v.to_string(),
                    None => return Ok(None),
                },
                None => reject,
            },
            Some(Rule::Boolean(result)) => match parse_bool(value) {
                Some(b) => yes_no(result(p, prefs, b)),
                None => reject,
            },
            Some(Rule::Fixed(v)) => v.to_string(),
            None => "NotUnderstood".to_string(),
        };
        self.answered.push(key.to_string());
        Ok(Some(answer))
    }

    /// Whether `key` has been answered during this negotiation.
    pub fn answered(&self, key: &str) -> bool {
        self.answered.iter().any(|k| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Negotiator {
        Negotiator::new(NegotiationPrefs::default())
    }

    fn ans(neg: &mut Negotiator, k: &str, v: &str) -> Option<String> {
        neg.offer(k, v).unwrap()
    }

    #[test]
    fn list_keys_take_first_acceptable_offer() {
        let mut neg = n();
        assert_eq!(
            ans(&mut neg, "HeaderDigest", "CRC32C,None").unwrap(),
            "CRC32C"
        );
        assert!(neg.params.header_digest);
        assert_eq!(ans(&mut neg, "DataDigest", "None,CRC32C").unwrap(), "None");
        assert!(!neg.params.data_digest);
        assert_eq!(ans(&mut neg, "HeaderDigest", "MD5").unwrap(), "Reject");
        let mut strict = Negotiator::new(NegotiationPrefs {
            header_digests: vec!["CRC32C".into()],
            ..NegotiationPrefs::default()
        });
        assert_eq!(
            ans(&mut strict, "HeaderDigest", "None,CRC32C").unwrap(),
            "CRC32C"
        );
    }

    #[test]
    fn numeric_min_and_max() {
        let mut neg = n();
        assert_eq!(ans(&mut neg, "MaxBurstLength", "262144").unwrap(), "262144");
        assert_eq!(
            ans(&mut neg, "FirstBurstLength", "999999999").unwrap(),
            "Reject"
        );
        assert_eq!(
            ans(&mut neg, "FirstBurstLength", "1048576").unwrap(),
            "262144"
        );
        assert_eq!(ans(&mut neg, "MaxConnections", "8").unwrap(), "1");
        assert_eq!(ans(&mut neg, "DefaultTime2Wait", "0").unwrap(), "2");
        assert_eq!(ans(&mut neg, "DefaultTime2Wait", "10").unwrap(), "10");
        assert_eq!(ans(&mut neg, "DefaultTime2Retain", "60").unwrap(), "20");
        assert_eq!(ans(&mut neg, "DefaultTime2Retain", "0").unwrap(), "0");
        assert_eq!(ans(&mut neg, "MaxOutstandingR2T", "16").unwrap(), "1");
        assert_eq!(ans(&mut neg, "ErrorRecoveryLevel", "2").unwrap(), "0");
        assert_eq!(ans(&mut neg, "MaxBurstLength", "0x1000").unwrap(), "4096");
        assert_eq!(
            neg.params.first_burst, 4096,
            "FirstBurstLength <= MaxBurstLength"
        );
    }

    #[test]
    fn boolean_and_or() {
        let mut neg = n();
        // OR with our Yes: always Yes.
        assert_eq!(ans(&mut neg, "InitialR2T", "No").unwrap(), "Yes");
        // AND with our Yes: follows the initiator.
        assert_eq!(ans(&mut neg, "ImmediateData", "No").unwrap(), "No");
        assert_eq!(ans(&mut neg, "ImmediateData", "Yes").unwrap(), "Yes");
        assert_eq!(ans(&mut neg, "DataPDUInOrder", "No").unwrap(), "Yes");
        assert_eq!(ans(&mut neg, "DataSequenceInOrder", "No").unwrap(), "Yes");
        assert_eq!(ans(&mut neg, "IFMarker", "Yes").unwrap(), "No");
        assert_eq!(ans(&mut neg, "ImmediateData", "maybe").unwrap(), "Reject");
        let mut no_imm = Negotiator::new(NegotiationPrefs {
            immediate_data: false,
            initial_r2t: false,
            ..NegotiationPrefs::default()
        });
        assert_eq!(ans(&mut no_imm, "ImmediateData", "Yes").unwrap(), "No");
        assert_eq!(ans(&mut no_imm, "InitialR2T", "No").unwrap(), "No");
    }

    #[test]
    fn declarations_and_unknown_keys() {
        let mut neg = n();
        assert_eq!(ans(&mut neg, "MaxRecvDataSegmentLength", "65536"), None);
        assert_eq!(neg.params.initiator_max_recv_data_segment, 65536);
        assert_eq!(ans(&mut neg, "InitiatorName", "iqn.x"), None);
        assert_eq!(
            ans(&mut neg, "X-com.example.Foo", "1").unwrap(),
            "NotUnderstood"
        );
        assert_eq!(ans(&mut neg, "Bogus", "1").unwrap(), "NotUnderstood");
        assert_eq!(ans(&mut neg, "HeaderDigest", "NotUnderstood"), None);
        assert!(neg.offer("SessionType", "Weird").is_err());
        assert!(neg.offer("InitiatorName", "").is_err());
        assert_eq!(
            ans(&mut neg, "MaxRecvDataSegmentLength", "100").unwrap(),
            "Reject"
        );
    }
}
