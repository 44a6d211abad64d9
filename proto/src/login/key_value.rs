//! Text-mode key=value pairs as carried in Login and Text PDUs (RFC 7143 section 6.1):
//! each pair is `key=value` followed by a NUL byte.

use nom::bytes::complete::{tag, take_while, take_while1};
use nom::multi::many0;
use nom::sequence::{separated_pair, terminated};
use nom::IResult;
use thiserror::Error;

/// RFC 7143 section 6.1: keys are at most 63 bytes; values at most 8192 bytes
/// (the longest any standard key allows).
pub const MAX_KEY_LEN: usize = 63;
pub const MAX_VALUE_LEN: usize = 8192;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TextError {
    #[error("bad key=value syntax at byte {0}")]
    Syntax(usize),
    #[error("key longer than {MAX_KEY_LEN} bytes")]
    KeyTooLong,
    #[error("value of {0} longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong(String),
    #[error("text is not UTF-8")]
    Utf8,
    #[error("more than {0} keys")]
    TooManyKeys(usize),
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_' | b'#')
}

fn pair(i: &[u8]) -> IResult<&[u8], Pair<'_>> {
    separated_pair(take_while1(is_key_char), tag("="), take_while(|c| c != 0))(i)
}

type Pair<'a> = (&'a [u8], &'a [u8]);

fn pairs(i: &[u8]) -> IResult<&[u8], Vec<Pair<'_>>> {
    many0(terminated(pair, tag("\0")))(i)
}

/// Parse a complete (already reassembled) text segment. Trailing NUL padding is
/// tolerated, and so is a final pair missing its NUL, as some initiators send.
pub fn parse_pairs(data: &[u8], max_keys: usize) -> Result<Vec<(String, String)>, TextError> {
    let (rest, mut raw) = pairs(data).map_err(|_| TextError::Syntax(0))?;
    let rest_trimmed: &[u8] = {
        let end = rest.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
        &rest[..end]
    };
    if !rest_trimmed.is_empty() {
        match pair(rest_trimmed) {
            Ok((&[], p)) => raw.push(p),
            _ => return Err(TextError::Syntax(data.len() - rest.len())),
        }
    }
    if raw.len() > max_keys {
        return Err(TextError::TooManyKeys(max_keys));
    }
    raw.into_iter()
        .map(|(k, v)| {
            if k.len() > MAX_KEY_LEN {
                return Err(TextError::KeyTooLong);
            }
            let key = std::str::from_utf8(k).map_err(|_| TextError::Utf8)?;
            if v.len() > MAX_VALUE_LEN {
                return Err(TextError::ValueTooLong(key.to_string()));
            }
            let value = std::str::from_utf8(v).map_err(|_| TextError::Utf8)?;
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Append `key=value\0` for every pair.
pub fn encode_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], out: &mut Vec<u8>) {
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_login_text() {
        let t = b"InitiatorName=iqn.2005-03.org.open-iscsi:abc\0SessionType=Normal\0HeaderDigest=CRC32C,None\0";
        let p = parse_pairs(t, 64).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], ("HeaderDigest".into(), "CRC32C,None".into()));
    }

    #[test]
    fn tolerates_missing_final_nul_and_padding() {
        assert_eq!(parse_pairs(b"A=1\0B=2", 8).unwrap().len(), 2);
        assert_eq!(parse_pairs(b"A=1\0\0\0", 8).unwrap().len(), 1);
        assert_eq!(parse_pairs(b"", 8).unwrap().len(), 0);
        assert_eq!(parse_pairs(b"A=\0", 8).unwrap()[0].1, "");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_pairs(b"novalue\0", 8).is_err());
        assert!(parse_pairs(b"=x\0", 8).is_err());
        assert!(parse_pairs(b"a b=c\0", 8).is_err());
        assert!(parse_pairs(b"A=1\0B=2\0C=3\0", 2).is_err());
        let long = format!("{}=1\0", "k".repeat(64));
        assert_eq!(parse_pairs(long.as_bytes(), 8), Err(TextError::KeyTooLong));
    }

    proptest! {
        #[test]
        fn round_trip(pairs in proptest::collection::vec(("[A-Za-z][A-Za-z0-9.]{0,20}", "[ -~]{0,40}"), 0..10)) {
            let mut out = Vec::new();
            encode_pairs(&pairs, &mut out);
            let back = parse_pairs(&out, 64).unwrap();
            let want: Vec<(String, String)> = pairs.clone();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_pairs(&bytes, 16);
        }
    }
}
