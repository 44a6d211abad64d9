//! What a login negotiates: our preferences for every key, the parameters a session
//! runs with once login completes (RFC 7143 defaults for every key not negotiated),
//! and the session type.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// The target's side of every negotiable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiationPrefs {
    /// Digests we accept, in our order of preference ("CRC32C", "None").
    pub header_digests: Vec<String>,
    pub data_digests: Vec<String>,
    /// What we declare as our MaxRecvDataSegmentLength.
    pub max_recv_data_segment: u32,
    pub max_burst: u32,
    pub first_burst: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
}

impl Default for NegotiationPrefs {
    fn default() -> Self {
        NegotiationPrefs {
            header_digests: vec!["None".into(), "CRC32C".into()],
            data_digests: vec!["None".into(), "CRC32C".into()],
            max_recv_data_segment: 262_144,
            max_burst: 16_776_192,
            first_burst: 262_144,
            initial_r2t: true,
            immediate_data: true,
            default_time2wait: 2,
            default_time2retain: 20,
        }
    }
}

/// Operational parameters of a session once login completes (RFC 7143 defaults
/// apply to every key the initiator did not negotiate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub session_type: SessionType,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub target_name: Option<String>,
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The initiator's declared MaxRecvDataSegmentLength: bounds our Data-In PDUs.
    pub initiator_max_recv_data_segment: u32,
    /// Ours: bounds the PDUs we accept.
    pub target_max_recv_data_segment: u32,
    pub max_burst: u32,
    pub first_burst: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            initiator_name: String::new(),
            initiator_alias: None,
            target_name: None,
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_max_recv_data_segment: 8192,
            target_max_recv_data_segment: 8192,
            max_burst: 262_144,
            first_burst: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}
