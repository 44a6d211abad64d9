//! Unit tests of the login machine: stages, multi-PDU requests and responses,
//! failure statuses, identity keys and keys declared once per login.

use super::*;
use std::sync::atomic::{AtomicU16, Ordering};

struct Env(AtomicU16);
impl LoginEnv for Env {
    fn new_tsih(&self) -> u16 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
    fn session_exists(&self, tsih: u16) -> bool {
        tsih == 1
    }
}

const TARGET: &str = "iqn.2023-06.csm.iscsi:test";

fn req(transit: bool, cont: bool, csg: u8, nsg: u8) -> LoginRequest {
    LoginRequest {
        transit,
        cont,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 7,
        cid: 0,
        cmd_sn: 100,
        exp_stat_sn: 0,
    }
}

fn text(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_pairs(pairs, &mut v);
    v
}

fn keys(data: &[u8]) -> Vec<(String, String)> {
    parse_pairs(data, 10_000).unwrap()
}

fn machine() -> LoginMachine {
    LoginMachine::new(Arc::new(LoginSettings::new(TARGET)))
}

#[test]
fn two_stage_login_completes_with_tsih() {
    let env = Env(AtomicU16::new(5));
    let mut m = machine();
    let t = text(&[
        ("InitiatorName", "iqn.test:init"),
        ("SessionType", "Normal"),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
    ]);
    let LoginStep::Respond(h, d) = m.handle(&req(true, false, 0, 1), &t, &env) else {
        panic!("expected a response")
    };
    assert!(h.transit && h.csg == 0 && h.nsg == 1);
    let k = keys(&d);
    assert!(k.contains(&("AuthMethod".into(), "None".into())));
    assert!(k.contains(&("TargetPortalGroupTag".into(), "1".into())));
    let t = text(&[
        ("HeaderDigest", "None"),
        ("MaxRecvDataSegmentLength", "65536"),
    ]);
    let LoginStep::Complete(h, d, o) = m.handle(&req(true, false, 1, 3), &t, &env) else {
        panic!("expected completion")
    };
    assert_eq!((h.csg, h.nsg, h.tsih), (1, 3, 5));
    assert_eq!(h.stat_sn + 1, o.next_stat_sn);
    assert_eq!(o.params.initiator_max_recv_data_segment, 65536);
    assert!(keys(&d).contains(&("MaxRecvDataSegmentLength".into(), "262144".into())));
}

#[test]
fn multi_pdu_request_is_reassembled() {
    let env = Env(AtomicU16::new(5));
    let mut m = machine();
    let t = text(&[
        ("InitiatorName", "iqn.test:init"),
        ("SessionType", "Discovery"),
    ]);
    let (a, b) = t.split_at(10);
    let LoginStep::Respond(h, d) = m.handle(&req(true, true, 1, 3), a, &env) else {
        panic!()
    };
    assert!(!h.transit && d.is_empty());
    assert!(matches!(
        m.handle(&req(true, false, 1, 3), b, &env),
        LoginStep::Complete(..)
    ));
}

#[test]
fn long_response_is_sent_with_continue_bit() {
    let env = Env(AtomicU16::new(5));
    let mut settings = LoginSettings::new(TARGET);
    settings.max_keys = 1000;
    let mut m = LoginMachine::new(Arc::new(settings));
    let mut pairs = vec![
        ("InitiatorName".to_string(), "iqn.test:init".to_string()),
        ("SessionType".to_string(), "Discovery".to_string()),
    ];
    for i in 0..700 {
        pairs.push((format!("X-vendor.key{i}"), "1".to_string()));
    }
    let mut t = Vec::new();
    encode_pairs(&pairs, &mut t);
    let LoginStep::Respond(h, d1) = m.handle(&req(true, false, 1, 3), &t, &env) else {
        panic!()
    };
    assert!(h.cont && !h.transit);
    assert_eq!(d1.len(), LOGIN_SEGMENT);
    let mut all = d1;
    loop {
        match m.handle(&req(true, false, 1, 3), &[], &env) {
            LoginStep::Respond(h, d) => {
                assert!(h.cont);
                all.extend(d);
            }
            LoginStep::Complete(h, d, _) => {
                assert!(h.transit && !h.cont);
                all.extend(d);
                break;
            }
            LoginStep::Fail(_, e) => panic!("{e}"),
        }
    }
    assert_eq!(keys(&all).len(), 701);
}

#[test]
fn failures_carry_the_right_status() {
    let env = Env(AtomicU16::new(5));
    let cases: Vec<(Vec<(&str, &str)>, LoginStatus)> = vec![
        (
            vec![("SessionType", "Normal")],
            LoginStatus::MISSING_PARAMETER,
        ),
        (
            vec![("InitiatorName", "i"), ("SessionType", "Normal")],
            LoginStatus::MISSING_PARAMETER,
        ),
        (
            vec![("InitiatorName", "i"), ("TargetName", "iqn.other")],
            LoginStatus::NOT_FOUND,
        ),
        (
            vec![("InitiatorName", "i"), ("SessionType", "Weird")],
            LoginStatus::SESSION_TYPE_UNSUPPORTED,
        ),
    ];
    for (pairs, want) in cases {
        let mut m = machine();
        match m.handle(&req(true, false, 0, 1), &text(&pairs), &env) {
            LoginStep::Fail(h, _) => {
                assert_eq!((h.status_class, h.status_detail), (want.class, want.detail))
            }
            other => panic!("{pairs:?}: expected failure, got {other:?}"),
        }
    }
    let mut m = machine();
    let mut r = req(true, false, 0, 1);
    r.version_min = 2;
    r.version_max = 2;
    let LoginStep::Fail(h, _) = m.handle(&r, &text(&[("InitiatorName", "i")]), &env) else {
        panic!()
    };
    assert_eq!(h.status_detail, LoginStatus::UNSUPPORTED_VERSION.detail);
    // Only CHAP offered, and we have no secrets configured.
    let mut m = machine();
    let t = text(&[
        ("InitiatorName", "i"),
        ("TargetName", TARGET),
        ("AuthMethod", "CHAP"),
    ]);
    let LoginStep::Fail(h, _) = m.handle(&req(true, false, 0, 1), &t, &env) else {
        panic!()
    };
    assert_eq!(h.status_detail, LoginStatus::AUTH_FAILURE.detail);
    // Adding a connection to a session that exists: MaxConnections is 1.
    let mut m = machine();
    let mut r = req(true, false, 1, 3);
    r.tsih = 1;
    let t = text(&[("InitiatorName", "i"), ("TargetName", TARGET)]);
    let LoginStep::Fail(h, _) = m.handle(&r, &t, &env) else {
        panic!()
    };
    assert_eq!(h.status_detail, LoginStatus::TOO_MANY_CONNECTIONS.detail);
}

fn initiator_error(step: LoginStep) -> LoginError {
    match step {
        LoginStep::Fail(h, e) => {
            let st = LoginStatus::INITIATOR_ERROR;
            assert_eq!((h.status_class, h.status_detail), (st.class, st.detail));
            e
        }
        other => panic!("expected an initiator error, got {other:?}"),
    }
}

#[test]
fn identity_keys_are_fixed_by_the_first_request() {
    let env = Env(AtomicU16::new(5));
    let mut settings = LoginSettings::new(TARGET);
    settings.allowed_initiators = vec!["iqn.test:allowed".into()];
    let settings = Arc::new(settings);
    // Discovery first, then a switch to Normal: the normal-session rules (ACL,
    // CHAP, limits) were never applied, so the login must fail.
    let mut m = LoginMachine::new(Arc::clone(&settings));
    let t = text(&[
        ("InitiatorName", "iqn.test:intruder"),
        ("SessionType", "Discovery"),
        ("AuthMethod", "None"),
    ]);
    assert!(matches!(
        m.handle(&req(true, false, 0, 1), &t, &env),
        LoginStep::Respond(..)
    ));
    let t = text(&[("SessionType", "Normal"), ("TargetName", TARGET)]);
    let e = initiator_error(m.handle(&req(true, false, 1, 3), &t, &env));
    assert!(matches!(e, LoginError::Redeclared(_)), "{e}");
    // A key the first request left out cannot be added later either.
    let mut m = LoginMachine::new(Arc::clone(&settings));
    let t = text(&[
        ("InitiatorName", "iqn.test:allowed"),
        ("TargetName", TARGET),
    ]);
    assert!(matches!(
        m.handle(&req(false, false, 0, 0), &t, &env),
        LoginStep::Respond(..)
    ));
    let t = text(&[("SessionType", "Discovery")]);
    let e = initiator_error(m.handle(&req(true, false, 0, 1), &t, &env));
    assert!(matches!(e, LoginError::LateIdentity(_)), "{e}");
    // A changed InitiatorName is a second declaration.
    let mut m = LoginMachine::new(Arc::clone(&settings));
    let t = text(&[
        ("InitiatorName", "iqn.test:allowed"),
        ("TargetName", TARGET),
    ]);
    assert!(matches!(
        m.handle(&req(true, false, 0, 1), &t, &env),
        LoginStep::Respond(..)
    ));
    let t = text(&[("InitiatorName", "iqn.test:intruder")]);
    initiator_error(m.handle(&req(true, false, 1, 3), &t, &env));
}

#[test]
fn every_key_is_accepted_once_per_login() {
    let env = Env(AtomicU16::new(5));
    let first = text(&[("InitiatorName", "i"), ("TargetName", TARGET)]);
    // Twice in one request.
    let mut m = machine();
    let mut t = first.clone();
    t.extend(text(&[
        ("HeaderDigest", "None"),
        ("HeaderDigest", "CRC32C"),
    ]));
    let e = initiator_error(m.handle(&req(true, false, 1, 3), &t, &env));
    assert_eq!(e, LoginError::Redeclared("HeaderDigest".into()));
    // Once in each of two requests.
    let mut m = machine();
    let mut t = first.clone();
    t.extend(text(&[("MaxBurstLength", "65536")]));
    assert!(matches!(
        m.handle(&req(false, false, 1, 0), &t, &env),
        LoginStep::Respond(..)
    ));
    let t = text(&[("MaxBurstLength", "16776192")]);
    let e = initiator_error(m.handle(&req(true, false, 1, 3), &t, &env));
    assert_eq!(e, LoginError::Redeclared("MaxBurstLength".into()));
    // Different keys in consecutive requests are fine.
    let mut m = machine();
    assert!(matches!(
        m.handle(&req(false, false, 1, 0), &first, &env),
        LoginStep::Respond(..)
    ));
    let t = text(&[("MaxBurstLength", "65536")]);
    assert!(matches!(
        m.handle(&req(true, false, 1, 3), &t, &env),
        LoginStep::Complete(..)
    ));
}

#[test]
fn backward_stage_transition_is_refused() {
    let env = Env(AtomicU16::new(5));
    let mut m = machine();
    let t = text(&[("InitiatorName", "i"), ("SessionType", "Discovery")]);
    assert!(matches!(
        m.handle(&req(true, false, 1, 0), &t, &env),
        LoginStep::Fail(..)
    ));
}

#[test]
fn a_draining_target_redirects_or_refuses_normal_logins_only() {
    struct Draining(Option<crate::login::Redirect>);
    impl LoginEnv for Draining {
        fn new_tsih(&self) -> u16 {
            1
        }
        fn session_exists(&self, _: u16) -> bool {
            false
        }
        fn redirect(&self) -> Option<crate::login::Redirect> {
            self.0.clone()
        }
    }
    let to = Draining(Some(crate::login::Redirect::To("10.0.0.2:3260,1".into())));
    let mut m = machine();
    let t = text(&[
        ("InitiatorName", "i"),
        ("SessionType", "Normal"),
        ("TargetName", TARGET),
    ]);
    let LoginStep::Fail(h, e) = m.handle(&req(true, false, 1, 3), &t, &to) else {
        panic!("a redirect expected")
    };
    assert_eq!((h.status_class, h.status_detail), (1, 1));
    assert_eq!(e.response_text(), b"TargetAddress=10.0.0.2:3260,1\0");
    let mut m = machine();
    let LoginStep::Fail(h, _) = m.handle(
        &req(true, false, 1, 3),
        &t,
        &Draining(Some(crate::login::Redirect::Unavailable)),
    ) else {
        panic!("a refusal expected")
    };
    assert_eq!((h.status_class, h.status_detail), (3, 1));
    // Discovery is still answered (with the peers' portals, by the I/O layer).
    let mut m = machine();
    let t = text(&[("InitiatorName", "i"), ("SessionType", "Discovery")]);
    assert!(matches!(
        m.handle(&req(true, false, 1, 3), &t, &to),
        LoginStep::Complete(..)
    ));
}
