//! The login key table, as tgt's `param.c` keeps one: every operational and identity
//! key this target negotiates, with its value range and the result rule RFC 7143
//! section 13 gives it (list: the first acceptable offer; numerical minimum or
//! maximum; boolean AND or OR; declarations, which are never answered). Adding a key
//! is a row here. Keys with no row are answered `NotUnderstood`.

use super::params::{NegotiationPrefs, SessionParams, SessionType};
use super::LoginError;

pub enum Rule {
    /// Declared by the initiator: recorded, never answered.
    Declaration(fn(&mut SessionParams, &str) -> Result<(), LoginError>),
    /// A list: the first of the initiator's values that is among ours.
    List {
        ours: fn(&NegotiationPrefs) -> &[String],
        record: fn(&mut SessionParams, &str),
    },
    /// A number in `lo..=hi`; `result` records and returns the negotiated value, or
    /// `None` for a declared number (no answer).
    Number {
        lo: u64,
        hi: u64,
        result: fn(&mut SessionParams, &NegotiationPrefs, u64) -> Option<u64>,
    },
    /// `Yes` or `No`; `result` records and returns the negotiated value.
    Boolean(fn(&mut SessionParams, &NegotiationPrefs, bool) -> bool),
    /// Answered with this value whatever the offer.
    Fixed(&'static str),
}

pub struct KeySpec {
    pub name: &'static str,
    pub rule: Rule,
    /// Names the session's initiator, target or type: RFC 7143 section 6.3 has it
    /// in the first login request only.
    pub identity: bool,
}

const fn key(name: &'static str, rule: Rule) -> KeySpec {
    KeySpec {
        name,
        rule,
        identity: false,
    }
}

const fn identity(name: &'static str, rule: Rule) -> KeySpec {
    KeySpec {
        name,
        rule,
        identity: true,
    }
}

/// 2^24 - 1: the largest data segment length a PDU can carry.
const MAX_SEGMENT: u64 = 16_777_215;

pub static KEYS: &[KeySpec] = &[
    identity(
        "InitiatorName",
        Rule::Declaration(|p, v| {
            if v.is_empty() {
                return Err(LoginError::Missing("InitiatorName"));
            }
            p.initiator_name = v.to_string();
            Ok(())
        }),
    ),
    identity(
        "InitiatorAlias",
        Rule::Declaration(|p, v| {
            p.initiator_alias = Some(v.to_string());
            Ok(())
        }),
    ),
    identity(
        "TargetName",
        Rule::Declaration(|p, v| {
            p.target_name = Some(v.to_string());
            Ok(())
        }),
    ),
    identity(
        "SessionType",
        Rule::Declaration(|p, v| {
            p.session_type = match v {
                "Normal" => SessionType::Normal,
                "Discovery" => SessionType::Discovery,
                other => return Err(LoginError::SessionType(other.to_string())),
            };
            Ok(())
        }),
    ),
    key(
        "HeaderDigest",
        Rule::List {
            ours: |prefs| &prefs.header_digests,
            record: |p, v| p.header_digest = v == "CRC32C",
        },
    ),
    key(
        "DataDigest",
        Rule::List {
            ours: |prefs| &prefs.data_digests,
            record: |p, v| p.data_digest = v == "CRC32C",
        },
    ),
    key(
        "MaxConnections",
        Rule::Number {
            lo: 1,
            hi: 65535,
            // One connection per session: the minimum with our 1.
            result: |p, _, n| {
                p.max_connections = n.min(1) as u16;
                Some(p.max_connections.into())
            },
        },
    ),
    key(
        "InitialR2T",
        Rule::Boolean(|p, prefs, b| {
            p.initial_r2t = b || prefs.initial_r2t;
            p.initial_r2t
        }),
    ),
    key(
        "ImmediateData",
        Rule::Boolean(|p, prefs, b| {
            p.immediate_data = b && prefs.immediate_data;
            p.immediate_data
        }),
    ),
    key(
        "MaxRecvDataSegmentLength",
        Rule::Number {
            lo: 512,
            hi: MAX_SEGMENT,
            result: |p, _, n| {
                p.initiator_max_recv_data_segment = n as u32;
                None
            },
        },
    ),
    key(
        "MaxBurstLength",
        Rule::Number {
            lo: 512,
            hi: MAX_SEGMENT,
            result: |p, prefs, n| {
                p.max_burst = (n as u32).min(prefs.max_burst);
                p.first_burst = p.first_burst.min(p.max_burst);
                Some(p.max_burst.into())
            },
        },
    ),
    key(
        "FirstBurstLength",
        Rule::Number {
            lo: 512,
            hi: MAX_SEGMENT,
            result: |p, prefs, n| {
                p.first_burst = (n as u32).min(prefs.first_burst).min(p.max_burst);
                Some(p.first_burst.into())
            },
        },
    ),
    key(
        "DefaultTime2Wait",
        Rule::Number {
            lo: 0,
            hi: 3600,
            result: |p, prefs, n| {
                p.default_time2wait = (n as u16).max(prefs.default_time2wait);
                Some(p.default_time2wait.into())
            },
        },
    ),
    key(
        "DefaultTime2Retain",
        Rule::Number {
            lo: 0,
            hi: 3600,
            result: |p, prefs, n| {
                p.default_time2retain = (n as u16).min(prefs.default_time2retain);
                Some(p.default_time2retain.into())
            },
        },
    ),
    key(
        "MaxOutstandingR2T",
        Rule::Number {
            lo: 1,
            hi: 65535,
            result: |p, _, _| {
                p.max_outstanding_r2t = 1;
                Some(1)
            },
        },
    ),
    // Our Yes ORed in: always Yes.
    key(
        "DataPDUInOrder",
        Rule::Boolean(|p, _, _| p.data_pdu_in_order),
    ),
    key(
        "DataSequenceInOrder",
        Rule::Boolean(|p, _, _| p.data_sequence_in_order),
    ),
    key(
        "ErrorRecoveryLevel",
        Rule::Number {
            lo: 0,
            hi: 2,
            result: |p, _, _| {
                p.error_recovery_level = 0;
                Some(0)
            },
        },
    ),
    // RFC 3720 markers, still offered by some initiators: never used here.
    key("IFMarker", Rule::Boolean(|_, _, _| false)),
    key("OFMarker", Rule::Boolean(|_, _, _| false)),
    key("IFMarkInt", Rule::Fixed("Irrelevant")),
    key("OFMarkInt", Rule::Fixed("Irrelevant")),
    // RFC 7144.
    key(
        "iSCSIProtocolLevel",
        Rule::Number {
            lo: 0,
            hi: 31,
            result: |_, _, n| Some(n.min(1)),
        },
    ),
    key("TaskReporting", Rule::Fixed("RFC3720")),
    // Target-side declarations an initiator has no business sending.
    key("TargetAlias", Rule::Fixed("Irrelevant")),
    key("TargetAddress", Rule::Fixed("Irrelevant")),
    key("TargetPortalGroupTag", Rule::Fixed("Irrelevant")),
];

pub fn lookup(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// Whether `name` is one of the identity keys of the first login request.
pub fn is_identity(name: &str) -> bool {
    lookup(name).is_some_and(|k| k.identity)
}
