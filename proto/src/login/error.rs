//! Login failures and the Status-Class/Status-Detail they are reported with
//! (RFC 7143 section 11.13.5).

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

impl LoginStatus {
    pub const SUCCESS: LoginStatus = LoginStatus::new(0, 0);
    pub const INITIATOR_ERROR: LoginStatus = LoginStatus::new(2, 0x00);
    pub const AUTH_FAILURE: LoginStatus = LoginStatus::new(2, 0x01);
    pub const FORBIDDEN: LoginStatus = LoginStatus::new(2, 0x02);
    pub const NOT_FOUND: LoginStatus = LoginStatus::new(2, 0x03);
    pub const UNSUPPORTED_VERSION: LoginStatus = LoginStatus::new(2, 0x05);
    pub const TOO_MANY_CONNECTIONS: LoginStatus = LoginStatus::new(2, 0x06);
    pub const MISSING_PARAMETER: LoginStatus = LoginStatus::new(2, 0x07);
    pub const SESSION_TYPE_UNSUPPORTED: LoginStatus = LoginStatus::new(2, 0x09);
    pub const SESSION_DOES_NOT_EXIST: LoginStatus = LoginStatus::new(2, 0x0a);
    pub const INVALID_DURING_LOGIN: LoginStatus = LoginStatus::new(2, 0x0b);
    pub const TARGET_ERROR: LoginStatus = LoginStatus::new(3, 0x00);
    pub const OUT_OF_RESOURCES: LoginStatus = LoginStatus::new(3, 0x02);
    pub const SERVICE_UNAVAILABLE: LoginStatus = LoginStatus::new(3, 0x01);
    pub const TARGET_MOVED_TEMPORARILY: LoginStatus = LoginStatus::new(1, 0x01);

    pub const fn new(class: u8, detail: u8) -> LoginStatus {
        LoginStatus { class, detail }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("malformed login text: {0}")]
    Text(#[from] super::TextError),
    #[error("missing required key {0}")]
    Missing(&'static str),
    #[error("unsupported iSCSI version range {min}..={max}")]
    Version { min: u8, max: u8 },
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
    #[error("unsupported session type {0:?}")]
    SessionType(String),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// RFC 7143 section 6.1: a key negotiated or declared twice in one login.
    #[error("key {0} sent twice in one login")]
    Redeclared(String),
    /// Identity keys are fixed by the first login request (section 6.3).
    #[error("key {0} sent after the first login request")]
    LateIdentity(String),
    #[error("authentication failed: {0}")]
    Auth(&'static str),
    #[error("initiator {0:?} is not allowed")]
    Forbidden(String),
    #[error("login text larger than {0} bytes")]
    TooLarge(usize),
    #[error("session with TSIH {0} does not exist")]
    NoSession(u16),
    #[error("session with TSIH {0} already has its one connection")]
    TooManyConnections(u16),
    /// A configured limit (sessions, connections) is reached; the initiator may retry.
    #[error("limit reached: {0}")]
    OutOfResources(String),
    /// The target is draining: log in at this portal instead.
    #[error("target draining: redirected to {0}")]
    Redirected(String),
    #[error("target draining and no peer to redirect to")]
    Unavailable,
}

impl LoginError {
    pub fn status(&self) -> LoginStatus {
        match self {
            LoginError::Text(_)
            | LoginError::Protocol(_)
            | LoginError::Redeclared(_)
            | LoginError::LateIdentity(_)
            | LoginError::TooLarge(_) => LoginStatus::INITIATOR_ERROR,
            LoginError::Missing(_) => LoginStatus::MISSING_PARAMETER,
            LoginError::Version { .. } => LoginStatus::UNSUPPORTED_VERSION,
            LoginError::UnknownTarget(_) => LoginStatus::NOT_FOUND,
            LoginError::SessionType(_) => LoginStatus::SESSION_TYPE_UNSUPPORTED,
            LoginError::Auth(_) => LoginStatus::AUTH_FAILURE,
            LoginError::Forbidden(_) => LoginStatus::FORBIDDEN,
            LoginError::NoSession(_) => LoginStatus::SESSION_DOES_NOT_EXIST,
            LoginError::TooManyConnections(_) => LoginStatus::TOO_MANY_CONNECTIONS,
            LoginError::OutOfResources(_) => LoginStatus::OUT_OF_RESOURCES,
            LoginError::Redirected(_) => LoginStatus::TARGET_MOVED_TEMPORARILY,
            LoginError::Unavailable => LoginStatus::SERVICE_UNAVAILABLE,
        }
    }

    /// The login response's text: the new address of a redirect, nothing otherwise.
    pub fn response_text(&self) -> Vec<u8> {
        match self {
            LoginError::Redirected(addr) => format!("TargetAddress={addr}\0").into_bytes(),
            _ => Vec::new(),
        }
    }
}
