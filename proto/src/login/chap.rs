//! CHAP authentication (RFC 7143 section 12.1.3, RFC 1994): one-way and mutual, MD5
//! (required by RFC 7143) and SHA-256, binary values in hex (`0x`) or base64 (`0b`),
//! constant-time comparison, and refusal of an initiator challenge equal to ours.

use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::LoginError;

/// Credentials for one direction of CHAP.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChapPolicy {
    /// What the initiator must prove (CHAP_N/CHAP_R it sends us).
    pub initiator: Option<Credentials>,
    /// What we answer with when the initiator asks for mutual CHAP.
    pub target: Option<Credentials>,
    /// Offer SHA-256 (algorithm 7) besides MD5 (5).
    pub allow_sha256: bool,
}

pub const ALG_MD5: u8 = 5;
pub const ALG_SHA256: u8 = 7;

fn hash(alg: u8, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    match alg {
        ALG_SHA256 => {
            let mut h = Sha256::new();
            h.update([id]);
            h.update(secret);
            h.update(challenge);
            h.finalize().to_vec()
        }
        _ => {
            let mut h = Md5::new();
            h.update([id]);
            h.update(secret);
            h.update(challenge);
            h.finalize().to_vec()
        }
    }
}

/// Decode a CHAP binary value: `0x` hex or `0b` base64.
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        let h = if h.len() % 2 == 1 {
            format!("0{h}")
        } else {
            h.to_string()
        };
        hex::decode(h).ok()
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        base64::engine::general_purpose::STANDARD.decode(b).ok()
    } else {
        None
    }
}

pub fn encode_hex(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

/// Where a CHAP exchange stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChapState {
    /// AuthMethod=CHAP agreed; waiting for CHAP_A.
    Chosen,
    /// We sent CHAP_I/CHAP_C; waiting for CHAP_N/CHAP_R.
    Challenged {
        alg: u8,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
}

/// Answer CHAP_A: pick the first algorithm we support and issue a challenge.
pub fn challenge(
    policy: &ChapPolicy,
    offered: &str,
) -> Result<(ChapState, Vec<(String, String)>), LoginError> {
    let alg = offered
        .split(',')
        .filter_map(|a| a.trim().parse::<u8>().ok())
        .find(|&a| a == ALG_MD5 || (a == ALG_SHA256 && policy.allow_sha256))
        .ok_or(LoginError::Auth("no supported CHAP_A algorithm offered"))?;
    let mut random = [0u8; 17];
    getrandom::getrandom(&mut random)
        .map_err(|_| LoginError::Auth("no randomness for a CHAP challenge"))?;
    let id = random[0];
    let challenge = random[1..].to_vec();
    let answer = vec![
        ("CHAP_A".to_string(), alg.to_string()),
        ("CHAP_I".to_string(), id.to_string()),
        ("CHAP_C".to_string(), encode_hex(&challenge)),
    ];
    Ok((ChapState::Challenged { alg, id, challenge }, answer))
}

/// Check the initiator's CHAP_N/CHAP_R and, for mutual CHAP, answer its CHAP_I/CHAP_C.
pub fn verify(
    policy: &ChapPolicy,
    state: &ChapState,
    name: Option<&str>,
    response: Option<&str>,
    mutual_id: Option<&str>,
    mutual_challenge: Option<&str>,
) -> Result<Vec<(String, String)>, LoginError> {
    let ChapState::Challenged { alg, id, challenge } = state else {
        return Err(LoginError::Protocol("CHAP_R before CHAP_C"));
    };
    let creds = policy
        .initiator
        .as_ref()
        .ok_or(LoginError::Auth("CHAP is not configured"))?;
    let name = name.ok_or(LoginError::Missing("CHAP_N"))?;
    let response = response
        .and_then(decode_binary)
        .ok_or(LoginError::Auth("missing or malformed CHAP_R"))?;
    let expected = hash(*alg, *id, &creds.secret, challenge);
    let name_ok = name.as_bytes().ct_eq(creds.user.as_bytes());
    let resp_ok = response.ct_eq(&expected);
    if !bool::from(name_ok & resp_ok) {
        return Err(LoginError::Auth("CHAP response does not match"));
    }
    let (Some(mid), Some(mc)) = (mutual_id, mutual_challenge) else {
        if mutual_id.is_some() || mutual_challenge.is_some() {
            return Err(LoginError::Protocol("CHAP_I without CHAP_C or the reverse"));
        }
        return Ok(Vec::new());
    };
    let target = policy
        .target
        .as_ref()
        .ok_or(LoginError::Auth("mutual CHAP requested but not configured"))?;
    let mid: u8 = mid.parse().map_err(|_| LoginError::Auth("bad CHAP_I"))?;
    let mc = decode_binary(mc).ok_or(LoginError::Auth("bad CHAP_C"))?;
    if mc.is_empty() || bool::from(mc.ct_eq(challenge)) {
        // Reflecting our own challenge back would let an attacker use us as an oracle.
        return Err(LoginError::Auth("initiator challenge reuses the target's"));
    }
    let r = hash(*alg, mid, &target.secret, &mc);
    Ok(vec![
        ("CHAP_N".to_string(), target.user.clone()),
        ("CHAP_R".to_string(), encode_hex(&r)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ChapPolicy {
        ChapPolicy {
            initiator: Some(Credentials {
                user: "node".into(),
                secret: b"initiatorsecret1".to_vec(),
            }),
            target: Some(Credentials {
                user: "target".into(),
                secret: b"targetsecret0001".to_vec(),
            }),
            allow_sha256: true,
        }
    }

    #[test]
    fn one_way_and_mutual_md5() {
        let p = policy();
        let (st, ans) = challenge(&p, "5").unwrap();
        assert_eq!(ans[0].1, "5");
        let ChapState::Challenged {
            alg,
            id,
            challenge: c,
        } = &st
        else {
            panic!()
        };
        let good = encode_hex(&hash(*alg, *id, b"initiatorsecret1", c));
        assert!(verify(&p, &st, Some("node"), Some(&good), None, None)
            .unwrap()
            .is_empty());
        // Base64 encodings are accepted too.
        let b64 = format!(
            "0b{}",
            base64::engine::general_purpose::STANDARD.encode(hash(
                *alg,
                *id,
                b"initiatorsecret1",
                c
            ))
        );
        assert!(verify(&p, &st, Some("node"), Some(&b64), None, None).is_ok());
        assert!(verify(&p, &st, Some("node"), Some("0x00"), None, None).is_err());
        assert!(verify(&p, &st, Some("other"), Some(&good), None, None).is_err());
        let mine = [9u8; 16];
        let ans = verify(
            &p,
            &st,
            Some("node"),
            Some(&good),
            Some("77"),
            Some(&encode_hex(&mine)),
        )
        .unwrap();
        assert_eq!(ans[0].1, "target");
        assert_eq!(
            ans[1].1,
            encode_hex(&hash(5, 77, b"targetsecret0001", &mine))
        );
        // Our own challenge reflected back is refused.
        assert!(verify(
            &p,
            &st,
            Some("node"),
            Some(&good),
            Some("1"),
            Some(&encode_hex(c))
        )
        .is_err());
    }

    #[test]
    fn algorithm_choice() {
        let p = policy();
        assert_eq!(challenge(&p, "7,5").unwrap().1[0].1, "7");
        let md5_only = ChapPolicy {
            allow_sha256: false,
            ..policy()
        };
        assert_eq!(challenge(&md5_only, "7,5").unwrap().1[0].1, "5");
        assert!(challenge(&p, "6").is_err());
    }

    #[test]
    fn rfc1994_md5_vector() {
        // id 1, secret "secret", challenge 0x00..0x0f: MD5 over the concatenation.
        let c: Vec<u8> = (0u8..16).collect();
        let mut all = vec![1u8];
        all.extend_from_slice(b"secret");
        all.extend_from_slice(&c);
        assert_eq!(hash(5, 1, b"secret", &c), Md5::digest(&all).to_vec());
    }
}
