//! What an S3 answer to a ranged GET must be before one of its bytes is kept: a
//! partial answer (a `Content-Range`) for exactly the range asked, a body of exactly
//! that length, under the ETag the GET was guarded with. RFC 9110 lets a server (or a
//! proxy or cache on the way) ignore `Range` and answer 200 with the whole object, and
//! a broken one can shift, cut or pad a range or drop the ETag; each of these is a
//! [`BadAnswer`], retried, counted and never cached. Pure functions of the headers and
//! the byte counts, so every case is tested without a server.

use std::fmt;

/// Why an answer to a ranged GET was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadAnswer {
    /// No `Content-Range`: a 200 with the whole object, `Range` ignored.
    RangeIgnored { content_length: Option<u64> },
    /// A `Content-Range` for another range (or another object size).
    WrongRange { asked: String, got: String },
    /// No `ETag` on an answer to a guarded GET.
    NoEtag,
    /// An `ETag` other than the one the GET was guarded with (something on the way
    /// ignores `If-Match`).
    OtherEtag { want: String, got: String },
    /// A body (declared or received) shorter than the range.
    Short { want: u64, got: u64 },
    /// A body (declared or received) longer than the range: cut off when seen.
    Long { want: u64, got: u64 },
}

impl BadAnswer {
    /// The metric label and the key of the once-per-object log line.
    pub fn kind(&self) -> &'static str {
        match self {
            BadAnswer::RangeIgnored { .. } => "range_ignored",
            BadAnswer::WrongRange { .. } => "wrong_range",
            BadAnswer::NoEtag => "no_etag",
            BadAnswer::OtherEtag { .. } => "other_etag",
            BadAnswer::Short { .. } => "short_body",
            BadAnswer::Long { .. } => "long_body",
        }
    }

    /// A bit per kind, for "logged once per object".
    pub fn bit(&self) -> u8 {
        match self {
            BadAnswer::RangeIgnored { .. } => 1,
            BadAnswer::WrongRange { .. } => 2,
            BadAnswer::NoEtag => 4,
            BadAnswer::OtherEtag { .. } => 8,
            BadAnswer::Short { .. } => 16,
            BadAnswer::Long { .. } => 32,
        }
    }
}

impl fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadAnswer::RangeIgnored { content_length } => write!(
                f,
                "the server ignored Range (a whole-object answer{}, no Content-Range)",
                content_length.map_or(String::new(), |l| format!(" of {l} bytes"))
            ),
            BadAnswer::WrongRange { asked, got } => {
                write!(f, "Content-Range {got:?} where {asked:?} was asked")
            }
            BadAnswer::NoEtag => write!(f, "no ETag on the answer to a guarded GET"),
            BadAnswer::OtherEtag { want, got } => {
                write!(f, "ETag {got} where {want} was asked (If-Match ignored)")
            }
            BadAnswer::Short { want, got } => {
                write!(f, "a {got}-byte body for a {want}-byte range")
            }
            BadAnswer::Long { want, got } => write!(
                f,
                "a body of {got} bytes or more for a {want}-byte range (cut off)"
            ),
        }
    }
}

/// The headers of an answer that matter, as the client saw them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers<'a> {
    pub content_range: Option<&'a str>,
    pub content_length: Option<u64>,
    pub etag: Option<&'a str>,
}

/// One ranged GET as asked: `offset..offset + len` of an object of `size` bytes (when
/// known), guarded by `etag` (unquoted) when there is one.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub offset: u64,
    pub len: u64,
    pub size: Option<u64>,
    pub etag: Option<&'a str>,
}

impl Asked<'_> {
    fn last(&self) -> u64 {
        self.offset + self.len - 1
    }
}

/// ETags compare without their quotes and weak marker, case-insensitively (RGW and
/// AWS agree on lower case, a proxy may not).
pub fn same_etag(a: &str, b: &str) -> bool {
    let n = |s: &str| {
        s.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_ascii_lowercase()
    };
    n(a) == n(b)
}

/// Check the headers of an answer before its body is read.
pub fn check_headers(asked: &Asked<'_>, h: &Headers<'_>) -> Result<(), BadAnswer> {
    let Some(range) = h.content_range else {
        return Err(BadAnswer::RangeIgnored {
            content_length: h.content_length,
        });
    };
    if !range_matches(asked, range) {
        return Err(BadAnswer::WrongRange {
            asked: format!(
                "bytes {}-{}/{}",
                asked.offset,
                asked.last(),
                asked.size.map_or("*".to_string(), |s| s.to_string())
            ),
            got: range.to_string(),
        });
    }
    if let Some(want) = asked.etag {
        match h.etag {
            None => return Err(BadAnswer::NoEtag),
            Some(got) if !same_etag(want, got) => {
                return Err(BadAnswer::OtherEtag {
                    want: want.to_string(),
                    got: got.to_string(),
                })
            }
            Some(_) => {}
        }
    }
    match h.content_length {
        Some(l) if l < asked.len => Err(BadAnswer::Short {
            want: asked.len,
            got: l,
        }),
        Some(l) if l > asked.len => Err(BadAnswer::Long {
            want: asked.len,
            got: l,
        }),
        _ => Ok(()),
    }
}

/// `bytes FIRST-LAST/SIZE` for exactly the range asked (SIZE may be `*`, or must be
/// the object's size when it is known).
fn range_matches(asked: &Asked<'_>, range: &str) -> bool {
    let Some(rest) = range.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((span, total)) = rest.split_once('/') else {
        return false;
    };
    let Some((first, last)) = span.split_once('-') else {
        return false;
    };
    let (Ok(first), Ok(last)) = (first.trim().parse::<u64>(), last.trim().parse::<u64>()) else {
        return false;
    };
    let total_ok = match (total.trim(), asked.size) {
        ("*", _) => true,
        (t, Some(size)) => t.parse::<u64>() == Ok(size),
        (t, None) => t.parse::<u64>().is_ok(),
    };
    first == asked.offset && last == asked.last() && total_ok
}

/// Counts a body's bytes as they arrive: refuses the first piece that goes past the
/// range (so a hostile body costs at most one piece), and an end short of it.
#[derive(Debug, Clone, Copy)]
pub struct BodyBound {
    want: u64,
    got: u64,
}

impl BodyBound {
    pub fn new(want: u64) -> BodyBound {
        BodyBound { want, got: 0 }
    }

    /// One more piece of `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<(), BadAnswer> {
        self.got = self.got.saturating_add(n as u64);
        if self.got > self.want {
            return Err(BadAnswer::Long {
                want: self.want,
                got: self.got,
            });
        }
        Ok(())
    }

    /// The body ended.
    pub fn end(&self) -> Result<(), BadAnswer> {
        if self.got < self.want {
            return Err(BadAnswer::Short {
                want: self.want,
                got: self.got,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED: Asked<'static> = Asked {
        offset: 4096,
        len: 1024,
        size: Some(1 << 20),
        etag: Some("abc-2"),
    };

    fn good() -> Headers<'static> {
        Headers {
            content_range: Some("bytes 4096-5119/1048576"),
            content_length: Some(1024),
            etag: Some("\"abc-2\""),
        }
    }

    #[test]
    fn the_exact_answer_passes() {
        assert_eq!(check_headers(&ASKED, &good()), Ok(()));
        let star = Headers {
            content_range: Some("bytes 4096-5119/*"),
            ..good()
        };
        assert_eq!(check_headers(&ASKED, &star), Ok(()));
        // No Content-Length (chunked): the body bound decides.
        let chunked = Headers {
            content_length: None,
            ..good()
        };
        assert_eq!(check_headers(&ASKED, &chunked), Ok(()));
    }

    #[test]
    fn every_wrong_answer_is_refused_with_its_kind() {
        let cases: [(Headers<'static>, &str); 8] = [
            (
                Headers {
                    content_range: None,
                    content_length: Some(1 << 20),
                    ..good()
                },
                "range_ignored",
            ),
            (
                Headers {
                    content_range: Some("bytes 4097-5120/1048576"),
                    ..good()
                },
                "wrong_range",
            ),
            (
                Headers {
                    content_range: Some("bytes 4096-4607/1048576"),
                    ..good()
                },
                "wrong_range",
            ),
            (
                Headers {
                    content_range: Some("bytes 4096-5119/2097152"),
                    ..good()
                },
                "wrong_range",
            ),
            (
                Headers {
                    etag: None,
                    ..good()
                },
                "no_etag",
            ),
            (
                Headers {
                    etag: Some("\"def-2\""),
                    ..good()
                },
                "other_etag",
            ),
            (
                Headers {
                    content_length: Some(512),
                    ..good()
                },
                "short_body",
            ),
            (
                Headers {
                    content_length: Some(1 << 30),
                    ..good()
                },
                "long_body",
            ),
        ];
        for (h, kind) in cases {
            let e = check_headers(&ASKED, &h).expect_err(kind);
            assert_eq!(e.kind(), kind, "{e}");
        }
        for garbage in ["bytes=4096-5119/1", "bytes 4096/5119", "bytes x-y/z", ""] {
            let h = Headers {
                content_range: Some(garbage),
                ..good()
            };
            assert!(check_headers(&ASKED, &h).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn etags_compare_without_quotes_or_case() {
        assert!(same_etag("\"ABC-2\"", "abc-2"));
        assert!(same_etag("W/\"abc\"", "abc"));
        assert!(!same_etag("abc", "abd"));
    }

    #[test]
    fn a_body_is_cut_at_the_first_piece_past_the_range() {
        let mut b = BodyBound::new(10);
        assert!(b.take(6).is_ok());
        assert_eq!(b.end().map_err(|e| e.kind()), Err("short_body"));
        assert!(b.take(4).is_ok());
        assert!(b.end().is_ok());
        assert_eq!(b.take(1).map_err(|e| e.kind()), Err("long_body"));
        let mut huge = BodyBound::new(10);
        assert!(huge.take(usize::MAX).is_err());
    }
}
