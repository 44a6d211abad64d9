//! Task Management Function Request and Response (RFC 7143 sections 11.5 and 11.6).

use super::{bhs, F, I};
use crate::pdu::{TmfFunction, TmfResponse};

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TaskMgmtRequest(TaskMgmtRequest) {
        pub immediate: bool = bit(0, I),
        pub function: TmfFunction = bits(1, 0x7f),
        pub lun: u64 = at(8),
        pub itt: u32 = at(16),
        pub ref_task_tag: u32 = at(20),
        pub cmd_sn: u32 = at(24),
        pub exp_stat_sn: u32 = at(28),
        pub ref_cmd_sn: u32 = at(32),
        pub exp_data_sn: u32 = at(36),
    }
    always(b) { b[1] |= F; }
}

bhs! {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TaskMgmtResponse(TaskMgmtResponse) {
        pub response: TmfResponse = at(2),
        pub itt: u32 = at(16),
        pub stat_sn: u32 = at(24),
        pub exp_cmd_sn: u32 = at(28),
        pub max_cmd_sn: u32 = at(32),
    }
    always(b) { b[1] |= F; }
}
