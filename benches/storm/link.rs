//! One initiator connection on the wire: PDUs framed with s3lun's own codec, and the
//! login, SendTargets and logout exchanges a booting node makes. Receiving is
//! cancel-safe (bytes stay buffered between calls), so a node can wait for a PDU and
//! for its next command's time in one `select!`.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use s3lun::login::{encode_pairs, parse_pairs};
use s3lun::pdu::framing::{decode, encode_to_vec};
use s3lun::pdu::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The data segment we accept: the largest Data-In the target may send.
pub const MAX_RECV: u32 = 262_144;

/// Who a node says it is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub initiator: String,
    pub isid: [u8; 6],
}

impl Identity {
    /// Node `n`: a name of its own under `prefix`, and a random-format ISID of its own.
    pub fn node(prefix: &str, n: u32) -> Identity {
        let b = n.to_be_bytes();
        Identity {
            initiator: format!("{prefix}-{n}"),
            isid: [0x80, b[0], b[1], b[2], b[3], 0x5a],
        }
    }
}

pub struct Link {
    stream: TcpStream,
    buf: BytesMut,
    cfg: FrameConfig,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub max_cmd_sn: u32,
    next_itt: u32,
}

impl Link {
    pub async fn connect(addr: &str, within: Duration) -> anyhow::Result<Link> {
        let stream = tokio::time::timeout(within, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect {addr}: timed out"))?
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Link {
            stream,
            buf: BytesMut::with_capacity(4096),
            cfg: FrameConfig::LOGIN,
            cmd_sn: 1,
            exp_stat_sn: 0,
            max_cmd_sn: 1,
            next_itt: 1,
        })
    }

    pub fn itt(&mut self) -> u32 {
        let i = self.next_itt;
        self.next_itt = self.next_itt.wrapping_add(1) & 0x7fff_ffff;
        i
    }

    pub async fn send(&mut self, h: &Header, data: &[u8]) -> anyhow::Result<()> {
        self.stream
            .write_all(&encode_to_vec(h, data, &self.cfg))
            .await
            .context("send")
    }

    /// The next PDU. Cancel-safe: a partial PDU stays in the buffer.
    pub async fn recv(&mut self) -> anyhow::Result<Pdu> {
        loop {
            if let Some(p) = decode(&mut self.buf, &self.cfg)? {
                return Ok(p);
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the target closed the connection");
            }
        }
    }

    /// Give back the receive buffer's memory while the node sits idle.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = BytesMut::new();
        }
    }

    /// Note the sequence numbers a response carries.
    pub fn saw(&mut self, stat_sn: Option<u32>, max_cmd_sn: u32) {
        if let Some(s) = stat_sn {
            if s.wrapping_add(1).wrapping_sub(self.exp_stat_sn) as i32 > 0 {
                self.exp_stat_sn = s.wrapping_add(1);
            }
        }
        if max_cmd_sn.wrapping_sub(self.max_cmd_sn) as i32 > 0 {
            self.max_cmd_sn = max_cmd_sn;
        }
    }

    /// Whether the target's command window has room for another command.
    pub fn window_open(&self) -> bool {
        self.max_cmd_sn.wrapping_sub(self.cmd_sn) as i32 >= 0
    }

    /// Log in straight to full feature phase (no authentication): a normal session to
    /// `target`, or a discovery session when `target` is None.
    pub async fn login(&mut self, who: &Identity, target: Option<&str>) -> anyhow::Result<()> {
        let mut keys = vec![("InitiatorName", who.initiator.as_str())];
        match target {
            Some(t) => {
                keys.push(("SessionType", "Normal"));
                keys.push(("TargetName", t));
            }
            None => keys.push(("SessionType", "Discovery")),
        }
        let recv_len = MAX_RECV.to_string();
        keys.extend([
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", recv_len.as_str()),
        ]);
        let mut text = Vec::new();
        encode_pairs(&keys, &mut text);
        let itt = self.itt();
        for _ in 0..8 {
            let req = Header::LoginRequest(LoginRequest::to_full_feature(
                who.isid,
                itt,
                self.cmd_sn,
                self.exp_stat_sn,
            ));
            self.send(&req, &text).await?;
            let p = self.recv().await?;
            let Header::LoginResponse(r) = p.header else {
                bail!(
                    "login: expected a Login Response, got {:?}",
                    p.header.opcode()
                );
            };
            if r.status_class != 0 {
                bail!(
                    "login refused: status {:#04x}{:02x}",
                    r.status_class,
                    r.status_detail
                );
            }
            self.exp_stat_sn = r.stat_sn.wrapping_add(1);
            self.max_cmd_sn = r.max_cmd_sn;
            if r.transit && r.nsg == 3 {
                self.cfg = FrameConfig {
                    header_digest: false,
                    data_digest: false,
                    max_data_segment: MAX_RECV,
                };
                return Ok(());
            }
            // The target wants another round of this stage: offer nothing new.
            text.clear();
        }
        bail!("login: no full feature phase after 8 rounds")
    }

    /// SendTargets=All on a discovery session: the target names it returns.
    pub async fn send_targets(&mut self) -> anyhow::Result<Vec<String>> {
        let mut text = Vec::new();
        encode_pairs(&[("SendTargets", "All")], &mut text);
        let itt = self.itt();
        let mut ttt = RESERVED_TAG;
        let mut got = Vec::new();
        loop {
            let req = Header::TextRequest(TextRequest {
                immediate: false,
                final_: true,
                cont: false,
                lun: 0,
                itt,
                ttt,
                cmd_sn: self.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            });
            self.send(&req, &text).await?;
            self.cmd_sn = self.cmd_sn.wrapping_add(1);
            let p = self.recv().await?;
            let Header::TextResponse(r) = p.header else {
                bail!("SendTargets: got {:?}", p.header.opcode());
            };
            self.saw(Some(r.stat_sn), r.max_cmd_sn);
            got.extend_from_slice(&p.data);
            if !r.cont {
                break;
            }
            ttt = r.ttt;
            text.clear();
        }
        let pairs = parse_pairs(&got, 4096).map_err(|e| anyhow::anyhow!("SendTargets: {e}"))?;
        Ok(pairs
            .into_iter()
            .filter(|(k, _)| k == "TargetName")
            .map(|(_, v)| v)
            .collect())
    }

    /// Answer a target's NOP-In ping (one that carries a target transfer tag).
    pub async fn answer_nop(&mut self, n: &NopIn) -> anyhow::Result<()> {
        self.saw(None, n.max_cmd_sn);
        if n.ttt == RESERVED_TAG {
            return Ok(());
        }
        let out = Header::NopOut(NopOut {
            immediate: true,
            lun: n.lun,
            itt: RESERVED_TAG,
            ttt: n.ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        });
        self.send(&out, &[]).await
    }

    /// Close the session and wait for the target's answer (answering pings meanwhile).
    pub async fn logout(&mut self) -> anyhow::Result<()> {
        let itt = self.itt();
        let req = Header::LogoutRequest(LogoutRequest::close_session(
            itt,
            self.cmd_sn,
            self.exp_stat_sn,
        ));
        self.send(&req, &[]).await?;
        loop {
            let p = self.recv().await?;
            match p.header {
                Header::LogoutResponse(r) if r.itt == itt => {
                    if r.response != 0 {
                        bail!("logout answered {}", r.response);
                    }
                    return Ok(());
                }
                Header::NopIn(n) => self.answer_nop(&n).await?,
                _ => {}
            }
        }
    }
}
