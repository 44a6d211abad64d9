//! Login PDU sequences with arbitrary keys, stages and flags against two login
//! machines: one that requires CHAP for normal sessions (the fuzzer cannot answer a
//! random challenge, so no normal session may ever complete there), and one guarded
//! by an initiator ACL alone (a normal session completes only for the listed name).
//! In both, a completed login carries exactly the initiator name the target admitted
//! (checked its ACL and limits against).
//!
//! Input: records of `flags, len, text[len]`; flags bit 7 transit, bit 6 continue,
//! bits 3..2 CSG, bits 1..0 NSG.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use s3lun::login::{
    ChapPolicy, Credentials, LoginEnv, LoginError, LoginMachine, LoginSettings, LoginStep,
    SessionType,
};
use s3lun::pdu::LoginRequest;

const TARGET: &str = "iqn.2023-06.csm.iscsi:s3lun-test";
const LISTED: &str = "iqn.fuzz:listed";

#[derive(Default)]
struct Env {
    admitted: RefCell<Vec<(String, SessionType)>>,
}

impl LoginEnv for Env {
    fn new_tsih(&self) -> u16 {
        7
    }
    fn session_exists(&self, _tsih: u16) -> bool {
        false
    }
    fn admit(&self, initiator: &str, _isid: [u8; 6], kind: SessionType) -> Result<(), LoginError> {
        self.admitted.borrow_mut().push((initiator.to_string(), kind));
        Ok(())
    }
}

fn run(settings: LoginSettings, data: &[u8], check: impl Fn(SessionType, &str)) {
    let mut m = LoginMachine::new(Arc::new(settings));
    let env = Env::default();
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (text, next) = tail.split_at(n);
        rest = next;
        let req = LoginRequest {
            transit: flags & 0x80 != 0,
            cont: flags & 0x40 != 0,
            csg: (flags >> 2) & 3,
            nsg: flags & 3,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 0, 0, 1],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
        };
        match m.handle(&req, text, &env) {
            LoginStep::Respond(..) => {}
            LoginStep::Fail(..) => return,
            LoginStep::Complete(_, _, o) => {
                let admitted = env.admitted.borrow();
                assert_eq!(admitted.len(), 1, "admitted once: {admitted:?}");
                assert_eq!(
                    admitted[0],
                    (o.params.initiator_name.clone(), o.params.session_type),
                    "the session is not the one admitted"
                );
                check(o.params.session_type, &o.params.initiator_name);
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut chap = LoginSettings::new(TARGET);
    chap.chap = ChapPolicy {
        initiator: Some(Credentials {
            user: "node".into(),
            secret: b"a-secret-of-16-b".to_vec(),
        }),
        target: None,
        allow_sha256: true,
    };
    run(chap, data, |t, name| {
        assert_eq!(t, SessionType::Discovery, "{name} got a normal session without CHAP");
    });
    let mut acl = LoginSettings::new(TARGET);
    acl.allowed_initiators = vec![LISTED.into()];
    run(acl, data, |t, name| {
        if t == SessionType::Normal {
            assert!(name.eq_ignore_ascii_case(LISTED), "{name} is not on the ACL");
        }
    });
});
