//! Framing of whole PDUs on a byte stream: BHS, AHS, optional header digest, data
//! segment, padding and optional data digest. Decoding slices the receive buffer
//! (`BytesMut::split_to` + `freeze`), so payloads are never copied.

use bytes::{Bytes, BytesMut};
use nom::number::complete::{be_u24, u8 as nom_u8};
use nom::IResult;

use super::{pad_len, Header, PduError, BHS_LEN};

/// What the framing needs to know from negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    pub header_digest: bool,
    pub data_digest: bool,
    /// Largest data segment we accept (our declared MaxRecvDataSegmentLength).
    pub max_data_segment: u32,
}

impl FrameConfig {
    /// Before login completes: no digests, RFC default segment size for login PDUs.
    pub const LOGIN: FrameConfig = FrameConfig {
        header_digest: false,
        data_digest: false,
        max_data_segment: 8192,
    };
}

/// A received PDU: typed header plus zero-copy views of the AHS and data segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    /// The raw BHS, kept so a Reject can echo it.
    pub raw_bhs: [u8; BHS_LEN],
    pub ahs: Bytes,
    pub data: Bytes,
}

/// TotalAHSLength (in 4-byte words) and DataSegmentLength, read with nom from bytes
/// 4..8 of the BHS.
fn lengths(i: &[u8]) -> IResult<&[u8], (u8, u32)> {
    let (i, ahs) = nom_u8(i)?;
    let (i, dsl) = be_u24(i)?;
    Ok((i, (ahs, dsl)))
}

fn read_lengths(bhs: &[u8]) -> (usize, u32) {
    match lengths(&bhs[4..8]) {
        Ok((_, (ahs, dsl))) => (ahs as usize * 4, dsl),
        // Four bytes always hold a u8 and a u24.
        Err(_) => (0, 0),
    }
}

/// Total length on the wire of the PDU whose BHS starts `buf`, or `None` if fewer than
/// 48 bytes are buffered. Fails early on a data segment larger than allowed, so a hostile
/// length never makes us buffer megabytes.
pub fn frame_len(buf: &[u8], cfg: &FrameConfig) -> Result<Option<usize>, PduError> {
    if buf.len() < BHS_LEN {
        return Ok(None);
    }
    let (ahs_len, dsl) = read_lengths(buf);
    if dsl > cfg.max_data_segment {
        return Err(PduError::DataSegmentTooLong {
            len: dsl,
            max: cfg.max_data_segment,
        });
    }
    let dsl = dsl as usize;
    let mut total = BHS_LEN + ahs_len;
    if cfg.header_digest {
        total += 4;
    }
    if dsl > 0 {
        total += dsl + pad_len(dsl);
        if cfg.data_digest {
            total += 4;
        }
    }
    Ok(Some(total))
}

/// Take one complete PDU off the front of `buf`, if one is there.
pub fn decode(buf: &mut BytesMut, cfg: &FrameConfig) -> Result<Option<Pdu>, PduError> {
    let Some(total) = frame_len(buf, cfg)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    parse_frame(buf.split_to(total).freeze(), cfg).map(Some)
}

/// Parse one complete PDU held in `frame` (exactly one frame, as `frame_len` sized it).
pub fn parse_frame(frame: Bytes, cfg: &FrameConfig) -> Result<Pdu, PduError> {
    let need = frame_len(&frame, cfg)?.unwrap_or(BHS_LEN);
    if frame.len() < need {
        return Err(PduError::Truncated {
            need,
            have: frame.len(),
        });
    }
    let mut raw_bhs = [0u8; BHS_LEN];
    raw_bhs.copy_from_slice(&frame[..BHS_LEN]);
    let (ahs_len, dsl) = read_lengths(&raw_bhs);
    let dsl = dsl as usize;
    let mut pos = BHS_LEN + ahs_len;
    if cfg.header_digest {
        let computed = crc32c::crc32c(&frame[..pos]);
        let received = digest_at(&frame, pos);
        if computed != received {
            return Err(PduError::HeaderDigest { computed, received });
        }
        pos += 4;
    }
    let header = Header::parse(&raw_bhs)?;
    let ahs = frame.slice(BHS_LEN..BHS_LEN + ahs_len);
    let data = frame.slice(pos..pos + dsl);
    if dsl > 0 && cfg.data_digest {
        let padded = dsl + pad_len(dsl);
        let computed = crc32c::crc32c(&frame[pos..pos + padded]);
        let received = digest_at(&frame, pos + padded);
        if computed != received {
            return Err(PduError::DataDigest { computed, received });
        }
    }
    Ok(Pdu {
        header,
        raw_bhs,
        ahs,
        data,
    })
}

/// iSCSI digests travel least-significant byte first.
fn digest_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Encode a digest for the wire.
pub fn digest_bytes(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// CRC32C over a data segment and its padding, without materialising the padding.
pub fn data_digest(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    let pad = pad_len(data.len());
    if pad == 0 {
        crc
    } else {
        crc32c::crc32c_append(crc, &[0u8; 3][..pad])
    }
}

/// One PDU ready for the wire: its header segment (with the header digest), the
/// payload as a slice of whatever holds it (never copied), then padding and the data
/// digest. The send path writes the three parts with one vectored write.
#[derive(Debug, Clone)]
pub struct Frame {
    head: [u8; BHS_LEN + 4],
    head_len: u8,
    pub data: Bytes,
    tail: [u8; 7],
    tail_len: u8,
}

impl Frame {
    /// Encode `header` for a PDU carrying `data` under the digests of `cfg`.
    pub fn new(header: &Header, data: Bytes, cfg: &FrameConfig) -> Frame {
        let mut bhs = [0u8; BHS_LEN];
        header.encode(0, data.len() as u32, &mut bhs);
        let mut head = [0u8; BHS_LEN + 4];
        head[..BHS_LEN].copy_from_slice(&bhs);
        let mut head_len = BHS_LEN;
        if cfg.header_digest {
            let d = digest_bytes(crc32c::crc32c(&head[..BHS_LEN]));
            head[BHS_LEN..].copy_from_slice(&d);
            head_len += 4;
        }
        let mut tail = [0u8; 7];
        let mut tail_len = 0;
        if !data.is_empty() {
            tail_len = pad_len(data.len());
            if cfg.data_digest {
                let d = digest_bytes(data_digest(&data));
                tail[tail_len..tail_len + 4].copy_from_slice(&d);
                tail_len += 4;
            }
        }
        Frame {
            head,
            head_len: head_len as u8,
            data,
            tail,
            tail_len: tail_len as u8,
        }
    }

    /// The basic header segment.
    pub fn bhs(&self) -> &[u8] {
        &self.head[..BHS_LEN]
    }

    /// BHS and header digest.
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    /// Padding and data digest.
    pub fn tail(&self) -> &[u8] {
        &self.tail[..self.tail_len as usize]
    }

    /// Bytes this frame puts on the wire.
    pub fn wire_len(&self) -> usize {
        self.head_len as usize + self.data.len() + self.tail_len as usize
    }

    /// The frame as one contiguous buffer (tests, the raw test initiator, fuzzers).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(self.head());
        out.extend_from_slice(&self.data);
        out.extend_from_slice(self.tail());
        out
    }
}

/// Serialize a PDU into a contiguous buffer (tests, the raw test initiator and the
/// fuzzers; the send path writes a [`Frame`]'s parts instead).
pub fn encode_to_vec(header: &Header, data: &[u8], cfg: &FrameConfig) -> Vec<u8> {
    Frame::new(header, Bytes::copy_from_slice(data), cfg).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{NopOut, TextRequest};
    use proptest::prelude::*;

    fn nop(data_len: usize) -> (Header, Vec<u8>) {
        let h = Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 5,
            ttt: super::super::RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
        });
        (h, (0..data_len).map(|i| i as u8).collect())
    }

    proptest! {
        #[test]
        fn frames_round_trip_with_any_digest_setting(len in 0usize..600, hd: bool, dd: bool) {
            let cfg = FrameConfig { header_digest: hd, data_digest: dd, max_data_segment: 8192 };
            let (h, data) = nop(len);
            let wire = encode_to_vec(&h, &data, &cfg);
            let mut buf = BytesMut::from(&wire[..]);
            // Feeding all but one byte yields nothing yet.
            let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
            prop_assert_eq!(decode(&mut partial, &cfg).unwrap(), None);
            let pdu = decode(&mut buf, &cfg).unwrap().unwrap();
            prop_assert_eq!(pdu.header, h);
            prop_assert_eq!(&pdu.data[..], &data[..]);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), hd: bool, dd: bool) {
            let cfg = FrameConfig { header_digest: hd, data_digest: dd, max_data_segment: 64 };
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, &cfg) {}
            let _ = parse_frame(Bytes::from(bytes), &cfg);
        }
    }

    #[test]
    fn corrupt_digests_are_detected() {
        let cfg = FrameConfig {
            header_digest: true,
            data_digest: true,
            max_data_segment: 8192,
        };
        let (h, data) = nop(10);
        let mut wire = encode_to_vec(&h, &data, &cfg);
        wire[60] ^= 1;
        let err = decode(&mut BytesMut::from(&wire[..]), &cfg).unwrap_err();
        assert!(matches!(err, PduError::DataDigest { .. }));
        wire[60] ^= 1;
        wire[20] ^= 1;
        let err = decode(&mut BytesMut::from(&wire[..]), &cfg).unwrap_err();
        assert!(matches!(err, PduError::HeaderDigest { .. }));
    }

    #[test]
    fn oversized_segment_is_refused_before_buffering() {
        let h = Header::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 1,
            ttt: super::super::RESERVED_TAG,
            cmd_sn: 0,
            exp_stat_sn: 0,
        });
        let mut bhs = [0u8; BHS_LEN];
        h.encode(0, 1 << 20, &mut bhs);
        let err = decode(&mut BytesMut::from(&bhs[..]), &FrameConfig::LOGIN).unwrap_err();
        assert!(matches!(err, PduError::DataSegmentTooLong { .. }));
    }

    #[test]
    fn known_crc32c_vector() {
        // RFC 3720 appendix B.4: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a9136aa);
    }
}
