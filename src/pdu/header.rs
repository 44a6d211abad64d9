//! Typed views of every basic header segment (RFC 7143 section 11), parsed from and
//! encoded into 48 bytes. Reserved fields are ignored on parse and written as zero;
//! TotalAHSLength and DataSegmentLength belong to the framing, not to these types.

use super::{Opcode, PduError, BHS_LEN};

fn u16_at(b: &[u8; BHS_LEN], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8; BHS_LEN], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn u64_at(b: &[u8; BHS_LEN], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(v)
}
fn put16(b: &mut [u8; BHS_LEN], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut [u8; BHS_LEN], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8; BHS_LEN], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}
fn bit(b: u8, mask: u8) -> bool {
    b & mask != 0
}
fn flag(on: bool, mask: u8) -> u8 {
    if on {
        mask
    } else {
        0
    }
}

const F: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_: bool,
    pub read: bool,
    pub write: bool,
    pub attr: u8,
    pub lun: u64,
    pub itt: u32,
    pub expected_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub cdb: [u8; 16],
}

impl ScsiCommand {
    /// A READ(10) of `blocks` 512-byte blocks at `lba` on LUN 0, as initiators send
    /// it (used by the tools, benches and tests that play initiator).
    pub fn read10(itt: u32, cmd_sn: u32, lba: u32, blocks: u16) -> ScsiCommand {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        ScsiCommand::read(itt, cmd_sn, cdb, blocks as u32 * 512)
    }

    /// Any data-in command on LUN 0 (simple task attribute, no immediate data).
    pub fn read(itt: u32, cmd_sn: u32, cdb: [u8; 16], expected_len: u32) -> ScsiCommand {
        ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: 0,
            itt,
            expected_len,
            cmd_sn,
            exp_stat_sn: 0,
            cdb,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: u8,
    pub lun: u64,
    pub itt: u32,
    pub ref_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiResponse {
    pub bidi_overflow: bool,
    pub bidi_underflow: bool,
    pub overflow: bool,
    pub underflow: bool,
    pub response: u8,
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub exp_data_sn: u32,
    pub bidi_residual: u32,
    pub residual: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataIn {
    pub final_: bool,
    pub ack: bool,
    pub overflow: bool,
    pub underflow: bool,
    /// SCSI status carried in this PDU (the S bit), if any.
    pub status: Option<u8>,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub residual: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: u8,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub time2wait: u16,
    pub time2retain: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: u8,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub data_sn: u32,
}

/// Reject reason codes (RFC 7143 section 11.17.1).
pub mod reject_reason {
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// A parsed basic header segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

impl Header {
    pub fn opcode(&self) -> Opcode {
        match self {
            Header::NopOut(_) => Opcode::NopOut,
            Header::ScsiCommand(_) => Opcode::ScsiCommand,
            Header::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Header::LoginRequest(_) => Opcode::LoginRequest,
            Header::TextRequest(_) => Opcode::TextRequest,
            Header::DataOut(_) => Opcode::DataOut,
            Header::LogoutRequest(_) => Opcode::LogoutRequest,
            Header::SnackRequest(_) => Opcode::SnackRequest,
            Header::NopIn(_) => Opcode::NopIn,
            Header::ScsiResponse(_) => Opcode::ScsiResponse,
            Header::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Header::LoginResponse(_) => Opcode::LoginResponse,
            Header::TextResponse(_) => Opcode::TextResponse,
            Header::DataIn(_) => Opcode::DataIn,
            Header::LogoutResponse(_) => Opcode::LogoutResponse,
            Header::R2t(_) => Opcode::R2t,
            Header::AsyncMessage(_) => Opcode::AsyncMessage,
            Header::Reject(_) => Opcode::Reject,
        }
    }

    /// Initiator Task Tag of the PDU, where it has one.
    pub fn itt(&self) -> Option<u32> {
        Some(match self {
            Header::NopOut(h) => h.itt,
            Header::ScsiCommand(h) => h.itt,
            Header::TaskMgmtRequest(h) => h.itt,
            Header::LoginRequest(h) => h.itt,
            Header::TextRequest(h) => h.itt,
            Header::DataOut(h) => h.itt,
            Header::LogoutRequest(h) => h.itt,
            Header::SnackRequest(h) => h.itt,
            Header::NopIn(h) => h.itt,
            Header::ScsiResponse(h) => h.itt,
            Header::TaskMgmtResponse(h) => h.itt,
            Header::LoginResponse(h) => h.itt,
            Header::TextResponse(h) => h.itt,
            Header::DataIn(h) => h.itt,
            Header::LogoutResponse(h) => h.itt,
            Header::R2t(h) => h.itt,
            _ => return None,
        })
    }

    /// Parse a basic header segment. Only the opcode can make this fail: every other
    /// field is representable, and semantic checks belong to the session layer.
    pub fn parse(b: &[u8; BHS_LEN]) -> Result<Header, PduError> {
        let op = Opcode::from_byte(b[0])?;
        let imm = bit(b[0], 0x40);
        let f1 = b[1];
        Ok(match op {
            Opcode::NopOut => Header::NopOut(NopOut {
                immediate: imm,
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::ScsiCommand => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b[32..48]);
                Header::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_: bit(f1, F),
                    read: bit(f1, 0x40),
                    write: bit(f1, 0x20),
                    attr: f1 & 0x07,
                    lun: u64_at(b, 8),
                    itt: u32_at(b, 16),
                    expected_len: u32_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                    cdb,
                })
            }
            Opcode::TaskMgmtRequest => Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate: imm,
                function: f1 & 0x7f,
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ref_task_tag: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
                ref_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
            }),
            Opcode::LoginRequest => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginRequest(LoginRequest {
                    transit: bit(f1, 0x80),
                    cont: bit(f1, 0x40),
                    csg: (f1 >> 2) & 3,
                    nsg: f1 & 3,
                    version_max: b[2],
                    version_min: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt: u32_at(b, 16),
                    cid: u16_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                })
            }
            Opcode::TextRequest => Header::TextRequest(TextRequest {
                immediate: imm,
                final_: bit(f1, F),
                cont: bit(f1, 0x40),
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::DataOut => Header::DataOut(DataOut {
                final_: bit(f1, F),
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
            }),
            Opcode::LogoutRequest => Header::LogoutRequest(LogoutRequest {
                immediate: imm,
                reason: f1 & 0x7f,
                itt: u32_at(b, 16),
                cid: u16_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::SnackRequest => Header::SnackRequest(SnackRequest {
                kind: f1 & 0x0f,
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                beg_run: u32_at(b, 40),
                run_length: u32_at(b, 44),
            }),
            Opcode::NopIn => Header::NopIn(NopIn {
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse {
                bidi_overflow: bit(f1, 0x10),
                bidi_underflow: bit(f1, 0x08),
                overflow: bit(f1, 0x04),
                underflow: bit(f1, 0x02),
                response: b[2],
                status: b[3],
                itt: u32_at(b, 16),
                snack_tag: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
                bidi_residual: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            Opcode::TaskMgmtResponse => Header::TaskMgmtResponse(TaskMgmtResponse {
                response: b[2],
                itt: u32_at(b, 16),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::LoginResponse => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginResponse(LoginResponse {
                    transit: bit(f1, 0x80),
                    cont: bit(f1, 0x40),
                    csg: (f1 >> 2) & 3,
                    nsg: f1 & 3,
                    version_max: b[2],
                    version_active: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt: u32_at(b, 16),
                    stat_sn: u32_at(b, 24),
                    exp_cmd_sn: u32_at(b, 28),
                    max_cmd_sn: u32_at(b, 32),
                    status_class: b[36],
                    status_detail: b[37],
                })
            }
            Opcode::TextResponse => Header::TextResponse(TextResponse {
                final_: bit(f1, F),
                cont: bit(f1, 0x40),
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::DataIn => Header::DataIn(DataIn {
                final_: bit(f1, F),
                ack: bit(f1, 0x40),
                overflow: bit(f1, 0x04),
                underflow: bit(f1, 0x02),
                status: bit(f1, 0x01).then_some(b[3]),
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            Opcode::LogoutResponse => Header::LogoutResponse(LogoutResponse {
                response: b[2],
                itt: u32_at(b, 16),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                time2wait: u16_at(b, 40),
                time2retain: u16_at(b, 42),
            }),
            Opcode::R2t => Header::R2t(R2t {
                lun: u64_at(b, 8),
                itt: u32_at(b, 16),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                r2t_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                desired_len: u32_at(b, 44),
            }),
            Opcode::AsyncMessage => Header::AsyncMessage(AsyncMessage {
                lun: u64_at(b, 8),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                event: b[36],
                vcode: b[37],
                param1: u16_at(b, 38),
                param2: u16_at(b, 40),
                param3: u16_at(b, 42),
            }),
            Opcode::Reject => Header::Reject(Reject {
                reason: b[2],
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
            }),
        })
    }

    /// Encode into a 48-byte BHS, with the framing fields supplied by the caller.
    pub fn encode(&self, total_ahs_words: u8, data_len: u32, b: &mut [u8; BHS_LEN]) {
        *b = [0u8; BHS_LEN];
        b[0] = self.opcode() as u8;
        b[4] = total_ahs_words;
        b[5..8].copy_from_slice(&data_len.to_be_bytes()[1..]);
        match self {
            Header::NopOut(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = F;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] =
                    flag(h.final_, F) | flag(h.read, 0x40) | flag(h.write, 0x20) | (h.attr & 0x07);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.expected_len);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
                b[32..48].copy_from_slice(&h.cdb);
            }
            Header::TaskMgmtRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = F | (h.function & 0x7f);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ref_task_tag);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 32, h.ref_cmd_sn);
                put32(b, 36, h.exp_data_sn);
            }
            Header::LoginRequest(h) => {
                b[0] |= 0x40;
                b[1] =
                    flag(h.transit, 0x80) | flag(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
                b[2] = h.version_max;
                b[3] = h.version_min;
                b[8..14].copy_from_slice(&h.isid);
                put16(b, 14, h.tsih);
                put32(b, 16, h.itt);
                put16(b, 20, h.cid);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::TextRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = flag(h.final_, F) | flag(h.cont, 0x40);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                b[1] = flag(h.final_, F);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 36, h.data_sn);
                put32(b, 40, h.buffer_offset);
            }
            Header::LogoutRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = F | (h.reason & 0x7f);
                put32(b, 16, h.itt);
                put16(b, 20, h.cid);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::SnackRequest(h) => {
                b[1] = F | (h.kind & 0x0f);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 40, h.beg_run);
                put32(b, 44, h.run_length);
            }
            Header::NopIn(h) => {
                b[1] = F;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                b[1] = F
                    | flag(h.bidi_overflow, 0x10)
                    | flag(h.bidi_underflow, 0x08)
                    | flag(h.overflow, 0x04)
                    | flag(h.underflow, 0x02);
                b[2] = h.response;
                b[3] = h.status;
                put32(b, 16, h.itt);
                put32(b, 20, h.snack_tag);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                put32(b, 36, h.exp_data_sn);
                put32(b, 40, h.bidi_residual);
                put32(b, 44, h.residual);
            }
            Header::TaskMgmtResponse(h) => {
                b[1] = F;
                b[2] = h.response;
                put32(b, 16, h.itt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
            }
            Header::LoginResponse(h) => {
                b[1] =
                    flag(h.transit, 0x80) | flag(h.cont, 0x40) | ((h.csg & 3) << 2) | (h.nsg & 3);
                b[2] = h.version_max;
                b[3] = h.version_active;
                b[8..14].copy_from_slice(&h.isid);
                put16(b, 14, h.tsih);
                put32(b, 16, h.itt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                b[36] = h.status_class;
                b[37] = h.status_detail;
            }
            Header::TextResponse(h) => {
                b[1] = flag(h.final_, F) | flag(h.cont, 0x40);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
            }
            Header::DataIn(h) => {
                b[1] = flag(h.final_, F)
                    | flag(h.ack, 0x40)
                    | flag(h.overflow, 0x04)
                    | flag(h.underflow, 0x02)
                    | flag(h.status.is_some(), 0x01);
                b[3] = h.status.unwrap_or(0);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                put32(b, 36, h.data_sn);
                put32(b, 40, h.buffer_offset);
                put32(b, 44, h.residual);
            }
            Header::LogoutResponse(h) => {
                b[1] = F;
                b[2] = h.response;
                put32(b, 16, h.itt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                put16(b, 40, h.time2wait);
                put16(b, 42, h.time2retain);
            }
            Header::R2t(h) => {
                b[1] = F;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                put32(b, 36, h.r2t_sn);
                put32(b, 40, h.buffer_offset);
                put32(b, 44, h.desired_len);
            }
            Header::AsyncMessage(h) => {
                b[1] = F;
                put64(b, 8, h.lun);
                put32(b, 16, super::RESERVED_TAG);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                b[36] = h.event;
                b[37] = h.vcode;
                put16(b, 38, h.param1);
                put16(b, 40, h.param2);
                put16(b, 42, h.param3);
            }
            Header::Reject(h) => {
                b[1] = F;
                b[2] = h.reason;
                put32(b, 16, super::RESERVED_TAG);
                put32(b, 24, h.stat_sn);
                put32(b, 28, h.exp_cmd_sn);
                put32(b, 32, h.max_cmd_sn);
                put32(b, 36, h.data_sn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_opcode(op: Opcode, mut raw: [u8; BHS_LEN]) -> [u8; BHS_LEN] {
        raw[0] = (raw[0] & 0x40) | op as u8;
        raw
    }

    proptest! {
        // For every opcode: whatever 48 bytes parse to, encoding that and parsing
        // again gives the same typed header, and the framing fields survive.
        #[test]
        fn every_opcode_round_trips(
            idx in 0usize..Opcode::ALL.len(),
            raw in proptest::array::uniform32(any::<u8>()),
            tail in proptest::array::uniform16(any::<u8>()),
            ahs in any::<u8>(),
            dsl in 0u32..(1 << 24),
        ) {
            let op = Opcode::ALL[idx];
            let mut bytes = [0u8; BHS_LEN];
            bytes[..32].copy_from_slice(&raw);
            bytes[32..].copy_from_slice(&tail);
            let bytes = with_opcode(op, bytes);
            let h = Header::parse(&bytes).expect("known opcode parses");
            prop_assert_eq!(h.opcode(), op);
            let mut out = [0u8; BHS_LEN];
            h.encode(ahs, dsl, &mut out);
            prop_assert_eq!(out[4], ahs);
            prop_assert_eq!(u32::from_be_bytes([0, out[5], out[6], out[7]]), dsl);
            let again = Header::parse(&out).expect("encoded header parses");
            prop_assert_eq!(again, h);
        }

        #[test]
        fn unknown_opcodes_are_errors(code in 0u8..64) {
            let mut b = [0u8; BHS_LEN];
            b[0] = code;
            let known = Opcode::ALL.iter().any(|o| *o as u8 == code);
            prop_assert_eq!(Header::parse(&b).is_ok(), known);
        }
    }

    #[test]
    fn scsi_command_fields_land_where_rfc_puts_them() {
        let h = Header::ScsiCommand(ScsiCommand {
            immediate: true,
            final_: true,
            read: true,
            write: false,
            attr: 1,
            lun: 0x0001_0000_0000_0000,
            itt: 0x11223344,
            expected_len: 4096,
            cmd_sn: 7,
            exp_stat_sn: 9,
            cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        });
        let mut b = [0u8; BHS_LEN];
        h.encode(0, 0, &mut b);
        assert_eq!(b[0], 0x41);
        assert_eq!(b[1], 0xc1);
        assert_eq!(&b[8..10], &[0, 1]);
        assert_eq!(&b[16..20], &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(&b[20..24], &4096u32.to_be_bytes());
        assert_eq!(b[32], 0x28);
    }
}
