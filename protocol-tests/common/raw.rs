//! A raw-socket test initiator: builds PDUs by hand (with s3lun's codec for the
//! byte layout) so tests can send what no well-behaved initiator would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use s3lun::login::{encode_pairs, parse_pairs};
use s3lun::pdu::framing::{encode_to_vec, frame_len, parse_frame};
use s3lun::pdu::*;

pub struct Raw {
    pub s: TcpStream,
    pub cfg: FrameConfig,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub itt: u32,
    pub isid: [u8; 6],
    pub name: String,
}

pub fn pairs(text: &[u8]) -> Vec<(String, String)> {
    parse_pairs(text, 10_000).expect("target sent valid text")
}

pub fn text(p: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_pairs(p, &mut v);
    v
}

pub fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw::connect_with(s)
    }

    fn connect_with(s: TcpStream) -> Raw {
        Raw {
            s,
            cfg: FrameConfig {
                header_digest: false,
                data_digest: false,
                max_data_segment: 16_777_215,
            },
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 0x100,
            isid: [0x80, 0x12, 0x34, 0x56, 0x00, 0x01],
            name: "iqn.2024-01.test:raw".into(),
        }
    }

    /// A Normal session to the test target, logged in, its power-on unit attention
    /// taken by a TEST UNIT READY, waiting up to 30 s for an answer (reads that go
    /// to S3 through faults take a while).
    pub fn session(port: u16) -> Raw {
        let mut r = Raw::connect(port);
        r.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        r.login_normal(super::TARGET, &[]);
        let _ = r.command(0, &[0x00], 0);
        r
    }

    /// A raw initiator on a connection made elsewhere (from a chosen address).
    pub fn from_stream(s: TcpStream, name: &str, isid_tail: u16) -> Raw {
        let _ = s.set_nodelay(true);
        let mut r = Raw::connect_with(s);
        r.name = name.to_string();
        r.isid[4..].copy_from_slice(&isid_tail.to_be_bytes());
        r
    }

    /// A first login request in the security stage, not going on; its response if
    /// one comes.
    pub fn try_login_step(&mut self, keys: &[(&str, &str)]) -> Option<LoginResponse> {
        let h = self.login_req(false, false, 0, 0);
        let wire = encode_to_vec(&h, &text(keys), &self.cfg);
        self.s.write_all(&wire).ok()?;
        match self.recv()?.header {
            Header::LoginResponse(r) => Some(r),
            _ => None,
        }
    }

    /// A raw initiator named `name` whose ISID ends in `isid_tail`.
    pub fn as_initiator(port: u16, name: &str, isid_tail: u16) -> Raw {
        let mut r = Raw::connect(port);
        r.name = name.to_string();
        r.isid[4..].copy_from_slice(&isid_tail.to_be_bytes());
        r
    }

    pub fn send(&mut self, h: &Header, data: &[u8]) {
        let wire = encode_to_vec(h, data, &self.cfg);
        self.s.write_all(&wire).expect("send");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send raw");
    }

    /// Next PDU, or `None` when the target closed the connection.
    pub fn recv(&mut self) -> Option<Pdu> {
        let mut buf = vec![0u8; BHS_LEN];
        if self.s.read_exact(&mut buf).is_err() {
            return None;
        }
        let total = frame_len(&buf, &self.cfg).expect("frame").expect("len");
        buf.resize(total, 0);
        self.s.read_exact(&mut buf[BHS_LEN..]).expect("rest of PDU");
        let pdu = parse_frame(Bytes::from(buf), &self.cfg).expect("target sent a valid PDU");
        if let Some(sn) = stat_sn(&pdu.header) {
            self.exp_stat_sn = sn.wrapping_add(1);
        }
        Some(pdu)
    }

    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the target to close the connection, got {other:?}"),
        }
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    pub fn login_req(&mut self, transit: bool, cont: bool, csg: u8, nsg: u8) -> Header {
        Header::LoginRequest(LoginRequest {
            transit,
            cont,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: 0,
            itt: self.itt,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        })
    }

    /// Login in one operational-stage PDU; returns the response and its keys.
    pub fn login_with(&mut self, keys: &[(&str, &str)]) -> (LoginResponse, Vec<(String, String)>) {
        self.login_step(true, 1, 3, keys)
    }

    /// One Login Request PDU (stage `csg`, to `nsg` when `transit`) and its response.
    pub fn login_step(
        &mut self,
        transit: bool,
        csg: u8,
        nsg: u8,
        keys: &[(&str, &str)],
    ) -> (LoginResponse, Vec<(String, String)>) {
        let h = self.login_req(transit, false, csg, nsg);
        self.send(&h, &text(keys));
        let pdu = self.recv().expect("login response");
        let Header::LoginResponse(r) = pdu.header else {
            panic!("expected a login response, got {:?}", pdu.header)
        };
        (r, pairs(&pdu.data))
    }

    /// A normal-session login with one-way CHAP (MD5) as `user` with `secret`.
    pub fn login_chap(&mut self, target: &str, user: &str, secret: &[u8]) {
        assert_eq!(
            self.try_login_chap(target, user, secret),
            (0, 0),
            "CHAP response"
        );
        let (r, _) = self.login_step(true, 1, 3, &[("HeaderDigest", "None")]);
        assert_eq!((r.status_class, r.nsg, r.tsih != 0), (0, 3, true));
    }

    /// The security stage of a CHAP login: the status of the response to CHAP_R.
    pub fn try_login_chap(&mut self, target: &str, user: &str, secret: &[u8]) -> (u8, u8) {
        use md5::{Digest, Md5};
        let name = self.name.clone();
        let (r, k) = self.login_step(
            false,
            0,
            0,
            &[
                ("InitiatorName", &name),
                ("SessionType", "Normal"),
                ("TargetName", target),
                ("AuthMethod", "CHAP"),
            ],
        );
        assert_eq!((r.status_class, get(&k, "AuthMethod")), (0, Some("CHAP")));
        let (_, k) = self.login_step(false, 0, 0, &[("CHAP_A", "5")]);
        let id: u8 = get(&k, "CHAP_I").expect("CHAP_I").parse().expect("id");
        let challenge = get(&k, "CHAP_C").expect("CHAP_C");
        let challenge = hex::decode(challenge.trim_start_matches("0x")).expect("hex");
        let mut h = Md5::new();
        h.update([id]);
        h.update(secret);
        h.update(&challenge);
        let response = format!("0x{}", hex::encode(h.finalize()));
        let (r, _) = self.login_step(true, 0, 1, &[("CHAP_N", user), ("CHAP_R", &response)]);
        (r.status_class, r.status_detail)
    }

    /// A normal-session login in one PDU, whatever its outcome.
    pub fn try_login(
        &mut self,
        target: &str,
        extra: &[(&str, &str)],
    ) -> (LoginResponse, Vec<(String, String)>) {
        let name = self.name.clone();
        let mut keys = vec![
            ("InitiatorName", name.as_str()),
            ("SessionType", "Normal"),
            ("TargetName", target),
        ];
        keys.extend_from_slice(extra);
        self.login_with(&keys)
    }

    /// A discovery-session login in one PDU; the response's status.
    pub fn login_discovery(&mut self) -> (u8, u8) {
        let name = self.name.clone();
        let (r, _) = self.login_with(&[("InitiatorName", &name), ("SessionType", "Discovery")]);
        (r.status_class, r.status_detail)
    }

    pub fn login_normal(&mut self, target: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let (r, p) = self.try_login(target, extra);
        assert_eq!(
            (r.status_class, r.status_detail),
            (0, 0),
            "login failed: {p:?}"
        );
        assert!(r.transit && r.nsg == 3 && r.tsih != 0);
        if get(&p, "HeaderDigest") == Some("CRC32C") {
            self.cfg.header_digest = true;
        }
        if get(&p, "DataDigest") == Some("CRC32C") {
            self.cfg.data_digest = true;
        }
        p
    }

    #[allow(clippy::too_many_arguments)]
    pub fn scsi(
        &mut self,
        lun: u64,
        cdb: &[u8],
        edtl: u32,
        read: bool,
        write: bool,
        final_: bool,
        data: &[u8],
    ) -> u32 {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let itt = self.next_itt();
        let h = Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_,
            read,
            write,
            attr: 1,
            lun: lun << 48,
            itt,
            expected_len: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
        });
        self.cmd_sn += 1;
        self.send(&h, data);
        itt
    }

    /// Run a command to completion: collected Data-In bytes and the final status.
    pub fn command(&mut self, lun: u64, cdb: &[u8], edtl: u32) -> (Vec<u8>, u8, Vec<u8>) {
        let itt = self.scsi(lun, cdb, edtl, edtl > 0, false, true, &[]);
        self.collect(itt)
    }

    pub fn collect(&mut self, itt: u32) -> (Vec<u8>, u8, Vec<u8>) {
        let mut data = Vec::new();
        loop {
            let pdu = self.recv().expect("response");
            match pdu.header {
                Header::DataIn(d) => {
                    assert_eq!(d.itt, itt);
                    assert_eq!(d.buffer_offset as usize, data.len());
                    data.extend_from_slice(&pdu.data);
                    if let Some(st) = d.status {
                        return (data, st.into(), Vec::new());
                    }
                }
                Header::ScsiResponse(r) => {
                    assert_eq!(r.itt, itt);
                    return (data, r.status.into(), pdu.data.to_vec());
                }
                Header::NopIn(n) => self.answer_ping(&n),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Answer the target's NOP-In ping, as an initiator must (or be timed out).
    pub fn answer_ping(&mut self, n: &NopIn) {
        if n.ttt == RESERVED_TAG {
            return;
        }
        let h = Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: RESERVED_TAG,
            ttt: n.ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        });
        self.send(&h, &[]);
    }

    /// A NOP-Out ping; the target must answer with a NOP-In echoing `payload`.
    pub fn nop(&mut self, payload: &[u8]) {
        let itt = self.next_itt();
        let h = Header::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        });
        self.send(&h, payload);
        let p = self.recv().expect("NOP-In");
        let Header::NopIn(n) = &p.header else {
            panic!("expected NOP-In, got {:?}", p.header)
        };
        assert_eq!(n.itt, itt);
        assert_eq!(&p.data[..], payload, "NOP-In echoes the ping data");
    }
}

impl Raw {
    /// A task management request (immediate); the response code.
    pub fn tmf(&mut self, function: u8, lun: u64, ref_task_tag: u32, ref_cmd_sn: u32) -> u8 {
        let itt = self.next_itt();
        let h = Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: function.into(),
            lun: lun << 48,
            itt,
            ref_task_tag,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        });
        self.send(&h, &[]);
        loop {
            let pdu = self.recv().expect("TMF response");
            match pdu.header {
                Header::TaskMgmtResponse(t) => {
                    assert_eq!(t.itt, itt);
                    return t.response.into();
                }
                Header::NopIn(n) => self.answer_ping(&n),
                other => panic!("expected TMF response, got {other:?}"),
            }
        }
    }

    /// READ(10) of `blocks` at `lba`, compared with `image`.
    pub fn read_checked(&mut self, image: &[u8], lba: u32, blocks: u16) {
        let (d, st, s) = self.command(0, &read10(lba, blocks), u32::from(blocks) * 512);
        assert_eq!(st, 0, "read status, sense {s:?}");
        let off = lba as usize * 512;
        assert_eq!(d.len(), usize::from(blocks) * 512, "read length");
        assert!(
            d[..] == image[off..off + d.len()],
            "bytes differ at LBA {lba}"
        );
    }

    /// Log out (close the session); returns the Logout Response's response code.
    pub fn logout(&mut self) -> u8 {
        let itt = self.next_itt();
        let h = Header::LogoutRequest(LogoutRequest::close_session(
            itt,
            self.cmd_sn,
            self.exp_stat_sn,
        ));
        self.send(&h, &[]);
        let pdu = self.recv().expect("Logout Response");
        let Header::LogoutResponse(l) = pdu.header else {
            panic!("expected Logout Response, got {:?}", pdu.header)
        };
        assert_eq!(l.itt, itt);
        l.response
    }

    /// One Text request with `keys`; the keys of the (single-PDU) answer.
    pub fn text_request(&mut self, keys: &[(&str, &str)]) -> Vec<(String, String)> {
        let itt = self.next_itt();
        let h = Header::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        });
        self.send(&h, &text(keys));
        let pdu = self.recv().expect("Text Response");
        let Header::TextResponse(t) = pdu.header else {
            panic!("expected Text Response, got {:?}", pdu.header)
        };
        assert!(t.final_ && !t.cont);
        pairs(&pdu.data)
    }
}

/// A logged-in session that must keep reading correct bytes while tests attack the
/// target beside it.
pub struct Bystander {
    pub raw: Raw,
    image: Vec<u8>,
    reads: u32,
}

impl Bystander {
    /// Log in as `iqn.2024-01.test:bystander` and clear the power-on unit attention.
    pub fn new(port: u16, target: &str, image: &[u8]) -> Bystander {
        let mut raw = Raw::connect(port);
        raw.name = "iqn.2024-01.test:bystander".into();
        raw.isid[5] = 0xbb;
        raw.login_normal(target, &[]);
        Bystander::ready(raw, image)
    }

    /// A bystander on a session logged in some other way (CHAP, say).
    pub fn ready(mut raw: Raw, image: &[u8]) -> Bystander {
        let _ = raw.command(0, &[0x00], 0);
        let mut b = Bystander {
            raw,
            image: image.to_vec(),
            reads: 0,
        };
        b.read();
        b
    }

    /// Read a few blocks somewhere new and check them.
    pub fn read(&mut self) {
        let blocks = (self.image.len() / 512) as u32;
        let lba = (self.reads * 37 + 11) % blocks.saturating_sub(8).max(1);
        self.reads += 1;
        let image = std::mem::take(&mut self.image);
        self.raw.read_checked(&image, lba, 8);
        self.image = image;
    }
}

/// A READ(10) CDB.
pub fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

pub fn stat_sn(h: &Header) -> Option<u32> {
    Some(match h {
        Header::NopIn(x) => x.stat_sn,
        Header::ScsiResponse(x) => x.stat_sn,
        Header::TaskMgmtResponse(x) => x.stat_sn,
        Header::LoginResponse(x) => x.stat_sn,
        Header::TextResponse(x) => x.stat_sn,
        Header::DataIn(x) if x.status.is_some() => x.stat_sn,
        Header::LogoutResponse(x) => x.stat_sn,
        Header::Reject(x) => x.stat_sn,
        _ => return None,
    })
}

/// Sense key and ASC from a SCSI Response sense segment.
pub fn sense(seg: &[u8]) -> (u8, u8) {
    let s = s3lun::scsi::sense::Sense::from_response_segment(seg)
        .unwrap_or_else(|| panic!("no readable sense: {seg:?}"));
    (s.key, s.asc)
}
