//! Login phase (RFC 7143 sections 6 and 13): text key=value pairs, negotiation of
//! every operational key with its own result rule, and the login state machine
//! (security and operational stages, multi-PDU requests and responses, TSIH).
//! Sans-IO: the machine takes parsed PDUs and returns the response to send.

pub mod chap;
pub mod error;
pub mod key_value;
pub mod keys;
pub mod machine;
pub mod negotiate;
pub mod params;

pub use chap::{ChapPolicy, Credentials};
pub use error::{LoginError, LoginStatus};
pub use key_value::{encode_pairs, parse_pairs, TextError};
pub use machine::{LoginEnv, LoginMachine, LoginOutcome, LoginSettings, LoginStep, Redirect};
pub use negotiate::Negotiator;
pub use params::{NegotiationPrefs, SessionParams, SessionType};
