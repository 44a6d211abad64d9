//! One file per family of basic header segments (RFC 7143 section 11), each header
//! with its parse and encode side by side, as h2's `frame/` keeps its frames. The
//! [`Bhs`] trait is the codec every header implements; [`super::Header`] dispatches
//! on the opcode. Reserved fields are ignored on parse and written as zero.

mod async_message;
mod data;
mod login;
mod logout;
mod nop;
mod reject;
mod scsi;
mod snack;
mod task_mgmt;
mod text;

pub use async_message::AsyncMessage;
pub use data::{DataIn, DataOut, R2t};
pub use login::{LoginRequest, LoginResponse};
pub use logout::{LogoutRequest, LogoutResponse};
pub use nop::{NopIn, NopOut};
pub use reject::Reject;
pub use scsi::{ScsiCommand, ScsiResponse};
pub use snack::SnackRequest;
pub use task_mgmt::{TaskMgmtRequest, TaskMgmtResponse};
pub use text::{TextRequest, TextResponse};

use super::{Opcode, BHS_LEN};

/// A basic header segment's codec: every field but the opcode byte's type bits,
/// TotalAHSLength and DataSegmentLength, which [`super::Header`] and the framing own.
pub trait Bhs: Sized {
    const OPCODE: Opcode;
    /// Parse from 48 bytes whose opcode is `OPCODE`: every field is representable,
    /// so this cannot fail; semantic checks belong to the session layer.
    fn parse(b: &[u8; BHS_LEN]) -> Self;
    /// Write the fields into a zeroed BHS whose opcode byte is already set.
    fn encode(&self, b: &mut [u8; BHS_LEN]);
}

/// Declares a header once: each field with where RFC 7143 puts it, from which the
/// struct, its parse and its encode all follow, so a field's layout is written in
/// one place. `always(b) { .. }` adds what encode writes whatever the fields (the F
/// bit of headers that have no other value, reserved tags).
macro_rules! bhs {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($op:ident) {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty = $kind:ident($($arg:expr),*),)*
        }
        $(always($b:ident) $always:block)?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $crate::pdu::bhs::Bhs for $name {
            const OPCODE: $crate::pdu::Opcode = $crate::pdu::Opcode::$op;

            #[inline]
            fn parse(b: &[u8; $crate::pdu::BHS_LEN]) -> $name {
                $name {
                    $($field: $crate::pdu::bhs::field::$kind::get(b, $($arg),*),)*
                }
            }

            #[inline]
            fn encode(&self, b: &mut [u8; $crate::pdu::BHS_LEN]) {
                $($crate::pdu::bhs::field::$kind::put(b, self.$field, $($arg),*);)*
                $({
                    let $b = b;
                    $always
                })?
            }
        }
    };
}
pub(crate) use bhs;

/// The kinds of field a header has, each read and written at its place.
pub(crate) mod field {
    use crate::pdu::{RejectReason, ScsiStatus, TmfResponse, BHS_LEN};

    /// A value stored big-endian (or as raw bytes) at a byte offset.
    pub trait Wire: Copy {
        fn get(b: &[u8; BHS_LEN], off: usize) -> Self;
        fn put(self, b: &mut [u8; BHS_LEN], off: usize);
    }

    macro_rules! wire_int {
        ($($t:ty),*) => {$(
            impl Wire for $t {
                #[inline]
                fn get(b: &[u8; BHS_LEN], off: usize) -> $t {
                    const N: usize = std::mem::size_of::<$t>();
                    let mut v = [0u8; N];
                    v.copy_from_slice(&b[off..off + N]);
                    <$t>::from_be_bytes(v)
                }
                #[inline]
                fn put(self, b: &mut [u8; BHS_LEN], off: usize) {
                    let v = self.to_be_bytes();
                    b[off..off + v.len()].copy_from_slice(&v);
                }
            }
        )*};
    }
    wire_int!(u8, u16, u32, u64);

    impl<const N: usize> Wire for [u8; N] {
        #[inline]
        fn get(b: &[u8; BHS_LEN], off: usize) -> [u8; N] {
            let mut v = [0u8; N];
            v.copy_from_slice(&b[off..off + N]);
            v
        }
        #[inline]
        fn put(self, b: &mut [u8; BHS_LEN], off: usize) {
            b[off..off + N].copy_from_slice(&self);
        }
    }

    macro_rules! wire_code {
        ($($t:ty),*) => {$(
            impl Wire for $t {
                #[inline]
                fn get(b: &[u8; BHS_LEN], off: usize) -> $t {
                    b[off].into()
                }
                #[inline]
                fn put(self, b: &mut [u8; BHS_LEN], off: usize) {
                    b[off] = self.into();
                }
            }
        )*};
    }
    wire_code!(RejectReason, ScsiStatus, TmfResponse);

    /// A whole field at a byte offset.
    pub mod at {
        use super::{Wire, BHS_LEN};
        #[inline]
        pub fn get<T: Wire>(b: &[u8; BHS_LEN], off: usize) -> T {
            T::get(b, off)
        }
        #[inline]
        pub fn put<T: Wire>(b: &mut [u8; BHS_LEN], v: T, off: usize) {
            v.put(b, off)
        }
    }

    /// One flag bit of a byte.
    pub mod bit {
        use super::BHS_LEN;
        #[inline]
        pub fn get(b: &[u8; BHS_LEN], byte: usize, mask: u8) -> bool {
            b[byte] & mask != 0
        }
        #[inline]
        pub fn put(b: &mut [u8; BHS_LEN], v: bool, byte: usize, mask: u8) {
            if v {
                b[byte] |= mask;
            }
        }
    }

    /// A value in the bits of a byte that `mask` selects (CSG, NSG, ATTR, function
    /// and reason codes).
    pub mod bits {
        use super::BHS_LEN;
        #[inline]
        pub fn get<T: From<u8>>(b: &[u8; BHS_LEN], byte: usize, mask: u8) -> T {
            ((b[byte] & mask) >> mask.trailing_zeros()).into()
        }
        #[inline]
        pub fn put<T: Into<u8>>(b: &mut [u8; BHS_LEN], v: T, byte: usize, mask: u8) {
            b[byte] |= (v.into() << mask.trailing_zeros()) & mask;
        }
    }

    /// A value at `off` that is present only when a flag bit says so (the status of
    /// a Data-In, with the S bit).
    pub mod flagged {
        use super::{Wire, BHS_LEN};
        #[inline]
        pub fn get<T: Wire>(b: &[u8; BHS_LEN], byte: usize, mask: u8, off: usize) -> Option<T> {
            (b[byte] & mask != 0).then(|| T::get(b, off))
        }
        #[inline]
        pub fn put<T: Wire>(
            b: &mut [u8; BHS_LEN],
            v: Option<T>,
            byte: usize,
            mask: u8,
            off: usize,
        ) {
            if let Some(v) = v {
                b[byte] |= mask;
                v.put(b, off);
            }
        }
    }
}

/// The F (final) bit of byte 1.
pub(super) const F: u8 = 0x80;
/// The I (immediate) bit of byte 0.
pub(super) const I: u8 = 0x40;
