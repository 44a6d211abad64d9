//! The numbers an instance holds are bindings, whatever the shared map object says.
//!
//! The map object in S3 is only the fleet's way of agreeing on numbers for new images;
//! anyone with write access to the bucket can rewrite, truncate or delete it. A LUN
//! number an instance has taken from the map (and keeps in its local state) stays bound
//! to its identity: a map read that gives one of our identities another number, gives
//! one of our numbers to another identity, or lacks one of our bindings is refused for
//! that binding (logged and counted by the caller), and the next conditional write
//! restores it. The only way a number leaves its identity is retirement (the number is
//! listed as retired and given to nobody), and a number this instance serves is never
//! retired under it. Pure functions, so every order of edits can be tested.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::numbers::Numbers;

/// A map read that contradicts a binding this instance holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contradiction {
    /// The map gives our identity another number.
    Moved {
        identity: String,
        ours: u64,
        theirs: u64,
    },
    /// The map gives our number to another identity.
    Taken {
        number: u64,
        ours: String,
        theirs: String,
    },
    /// The map lacks our binding (edited out, truncated, deleted) without retiring it.
    Dropped { identity: String, number: u64 },
    /// The map retires a number this instance serves.
    RetiredInUse { identity: String, number: u64 },
}

impl Contradiction {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Contradiction::Moved { .. } => "binding_moved",
            Contradiction::Taken { .. } => "binding_taken",
            Contradiction::Dropped { .. } => "binding_dropped",
            Contradiction::RetiredInUse { .. } => "retired_in_use",
        }
    }
}

impl fmt::Display for Contradiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contradiction::Moved {
                identity,
                ours,
                theirs,
            } => write!(f, "the map moves {identity} from LUN {ours} to {theirs}"),
            Contradiction::Taken {
                number,
                ours,
                theirs,
            } => write!(
                f,
                "the map gives LUN {number} (bound to {ours}) to {theirs}"
            ),
            Contradiction::Dropped { identity, number } => {
                write!(f, "the map lacks LUN {number} of {identity}")
            }
            Contradiction::RetiredInUse { identity, number } => {
                write!(f, "the map retires LUN {number}, which serves {identity}")
            }
        }
    }
}

/// A map read, reconciled with what this instance holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The read map with every binding we hold restored.
    pub numbers: Numbers,
    /// What the read map contradicted (each restored in `numbers`).
    pub refused: Vec<Contradiction>,
    /// Bindings the map retired that this instance does not serve: accepted.
    pub retired: Vec<(String, u64)>,
}

/// Reconcile a map read with what this instance holds (`held`: its bindings and the
/// numbers it knows retired) and `served` (the identities in its LUN table now).
pub fn reconcile(read: &Numbers, held: &Numbers, served: &HashSet<String>) -> Reconciled {
    let mut out = read.clone();
    let mut refused = Vec::new();
    let mut retired = Vec::new();
    // A retired number stays retired: a map that lost it (deleted, rewritten) must not
    // hand it out again.
    for &r in &held.retired {
        if held.assigned.values().any(|&n| n == r) || out.retired.contains(&r) {
            continue;
        }
        if let Some(id) = out
            .assigned
            .iter()
            .find(|(_, &n)| n == r)
            .map(|(id, _)| id.clone())
        {
            refused.push(Contradiction::Taken {
                number: r,
                ours: "(retired)".into(),
                theirs: id.clone(),
            });
            out.assigned.remove(&id);
        }
        out.retired.push(r);
    }
    let held_retired = &held.retired;
    let held = &held.assigned;
    // number -> identity of the read map, kept up to date as bindings are restored.
    let mut owner: BTreeMap<u64, String> = out
        .assigned
        .iter()
        .map(|(id, &n)| (n, id.clone()))
        .collect();
    for (id, &n) in held {
        let theirs = out.assigned.get(id).copied();
        if theirs == Some(n) {
            continue;
        }
        let is_retired = out.retired.contains(&n);
        if theirs.is_none() && is_retired && !owner.contains_key(&n) {
            if !served.contains(id) {
                retired.push((id.clone(), n));
                continue;
            }
            refused.push(Contradiction::RetiredInUse {
                identity: id.clone(),
                number: n,
            });
        } else if let Some(m) = theirs {
            refused.push(Contradiction::Moved {
                identity: id.clone(),
                ours: n,
                theirs: m,
            });
        } else if let Some(other) = owner.get(&n) {
            refused.push(Contradiction::Taken {
                number: n,
                ours: id.clone(),
                theirs: other.clone(),
            });
        } else {
            refused.push(Contradiction::Dropped {
                identity: id.clone(),
                number: n,
            });
        }
        // Restore: our identity at our number, nobody else there, not retired.
        if let Some(m) = out.assigned.remove(id) {
            owner.remove(&m);
            // The number the map moved us to is not ours: keep it out of use.
            if !out.retired.contains(&m)
                && !held.values().any(|&h| h == m)
                && !held_retired.contains(&m)
            {
                out.retired.push(m);
            }
        }
        if let Some(other) = owner.insert(n, id.clone()) {
            out.assigned.remove(&other);
        }
        out.retired.retain(|&r| r != n);
        out.assigned.insert(id.clone(), n);
    }
    out.retired.sort_unstable();
    Reconciled {
        numbers: out,
        refused,
        retired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn numbers(assigned: &[(&str, u64)], retired: &[u64]) -> Numbers {
        Numbers {
            assigned: assigned.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            retired: retired.to_vec(),
        }
    }

    fn bound(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn held(pairs: &[(&str, u64)]) -> Numbers {
        numbers(pairs, &[])
    }

    fn served(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_agreeing_map_is_taken_as_it_is() {
        let read = numbers(&[("a", 0), ("b", 1), ("c", 2)], &[5]);
        let r = reconcile(&read, &held(&[("a", 0), ("b", 1)]), &served(&["a"]));
        assert_eq!(r.numbers, read);
        assert!(r.refused.is_empty() && r.retired.is_empty());
    }

    #[test]
    fn a_moved_number_is_refused_and_restored() {
        // Someone gives LUN 0 to b and moves a to 7.
        let read = numbers(&[("a", 7), ("b", 0)], &[]);
        let r = reconcile(&read, &held(&[("a", 0), ("b", 1)]), &served(&["a", "b"]));
        assert_eq!(r.numbers.assigned, bound(&[("a", 0), ("b", 1)]));
        assert!(
            r.numbers.retired.contains(&7),
            "7 was handed out: kept out of use"
        );
        let kinds: Vec<_> = r.refused.iter().map(Contradiction::kind).collect();
        // a first: moved back to 0, which takes 0 from b; then b lacks its 1.
        assert_eq!(kinds, ["binding_moved", "binding_dropped"]);
    }

    #[test]
    fn a_deleted_or_emptied_map_is_rebuilt_from_what_we_hold() {
        let r = reconcile(
            &Numbers::default(),
            &held(&[("a", 0), ("b", 3)]),
            &served(&["a"]),
        );
        assert_eq!(r.numbers.assigned, bound(&[("a", 0), ("b", 3)]));
        assert_eq!(r.refused.len(), 2);
        assert!(r.refused.iter().all(|c| c.kind() == "binding_dropped"));
    }

    #[test]
    fn retirement_is_accepted_only_for_numbers_nobody_here_serves() {
        let read = numbers(&[("a", 0)], &[1, 2]);
        let r = reconcile(
            &read,
            &held(&[("a", 0), ("b", 1), ("c", 2)]),
            &served(&["a", "c"]),
        );
        assert_eq!(r.retired, [("b".to_string(), 1)]);
        assert_eq!(r.numbers.assigned.get("c"), Some(&2));
        assert_eq!(r.numbers.retired, [1]);
        assert_eq!(r.refused[0].kind(), "retired_in_use");
    }

    #[test]
    fn a_taken_number_goes_back_to_its_identity() {
        let read = numbers(&[("x", 0)], &[]);
        let r = reconcile(&read, &held(&[("a", 0)]), &served(&[]));
        assert_eq!(r.numbers.assigned, bound(&[("a", 0)]));
        assert_eq!(r.refused[0].kind(), "binding_taken");
    }

    #[test]
    fn a_retired_number_stays_retired_when_the_map_forgets_it() {
        let held = numbers(&[("a", 0)], &[1]);
        let r = reconcile(&numbers(&[("x", 1)], &[]), &held, &served(&["a"]));
        assert_eq!(r.numbers, numbers(&[("a", 0)], &[1]));
        assert_eq!(r.refused[0].kind(), "binding_taken");
    }

    /// One instance: what it holds and serves, and every number it ever served.
    #[derive(Debug, Default, Clone)]
    struct Instance {
        held: Numbers,
        history: BTreeMap<u64, String>,
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// An image enters the catalog.
        Add(u8),
        /// An image leaves it.
        Remove(u8),
        /// Instance k reads the map, reconciles, adds numbers and writes it back.
        Sync(u8),
        /// Someone moves a number to another identity.
        Move(u8, u8),
        /// Someone swaps two identities' numbers.
        Swap(u8, u8),
        /// Someone edits an entry out.
        Drop(u8),
        /// Someone deletes the map object.
        Delete,
        /// Someone (an operator) retires a number.
        Retire(u8),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u8..8).prop_map(Event::Add),
            (0u8..8).prop_map(Event::Remove),
            (0u8..3).prop_map(Event::Sync),
            (0u8..3).prop_map(Event::Sync),
            (0u8..8, 0u8..8).prop_map(|(a, b)| Event::Move(a, b)),
            (0u8..8, 0u8..8).prop_map(|(a, b)| Event::Swap(a, b)),
            (0u8..8).prop_map(Event::Drop),
            Just(Event::Delete),
            (0u8..8).prop_map(Event::Retire),
        ]
    }

    fn id(i: u8) -> String {
        format!("img-{i}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over any order of catalog changes, syncs and map tampering: a number an
        /// instance has served never goes to another identity there, and an identity
        /// it serves keeps its number through every sync.
        #[test]
        fn a_served_number_never_changes_its_identity(events in proptest::collection::vec(event(), 1..60)) {
            let mut map = Numbers::default();
            let mut catalog: Vec<String> = Vec::new();
            let mut instances = vec![Instance::default(); 3];
            let sync = |inst: &mut Instance, map: &mut Numbers, catalog: &[String]| {
                let served: HashSet<String> = catalog
                    .iter()
                    .filter(|c| inst.held.assigned.contains_key(*c))
                    .cloned()
                    .collect();
                let before: Vec<(String, u64)> = served
                    .iter()
                    .map(|c| (c.clone(), inst.held.assigned[c]))
                    .collect();
                let r = reconcile(map, &inst.held, &served);
                let mut next = r.numbers;
                let wanted: Vec<(String, Option<u64>)> =
                    catalog.iter().map(|c| (c.clone(), None)).collect();
                next.extend(&wanted);
                *map = next.clone();
                inst.held = next;
                for (c, n) in before {
                    prop_assert_eq!(inst.held.assigned.get(&c), Some(&n), "{} was served at {}", c, n);
                }
                for c in catalog {
                    if let Some(&n) = inst.held.assigned.get(c) {
                        let before = inst.history.insert(n, c.clone());
                        prop_assert!(before.as_ref().is_none_or(|b| b == c), "LUN {} moved from {:?} to {}", n, before, c);
                    }
                }
                Ok(())
            };
            for e in events {
                match e {
                    Event::Add(i) => if !catalog.contains(&id(i)) { catalog.push(id(i)) },
                    Event::Remove(i) => catalog.retain(|c| *c != id(i)),
                    Event::Sync(k) => sync(&mut instances[k as usize], &mut map, &catalog)?,
                    Event::Move(a, b) => {
                        if let Some(&n) = map.assigned.get(&id(a)) {
                            map.assigned.retain(|_, v| *v != n);
                            map.assigned.insert(id(b), n);
                        }
                    }
                    Event::Swap(a, b) => {
                        let (x, y) = (map.assigned.get(&id(a)).copied(), map.assigned.get(&id(b)).copied());
                        if let (Some(x), Some(y)) = (x, y) {
                            map.assigned.insert(id(a), y);
                            map.assigned.insert(id(b), x);
                        }
                    }
                    Event::Drop(i) => { map.assigned.remove(&id(i)); }
                    Event::Delete => map = Numbers::default(),
                    Event::Retire(i) => {
                        if let Some(n) = map.assigned.remove(&id(i)) {
                            map.retired.push(n);
                        }
                    }
                }
            }
            for inst in instances.iter_mut() {
                sync(inst, &mut map, &catalog)?;
                for (id, n) in &inst.held.assigned {
                    if let Some(who) = inst.history.get(n) {
                        prop_assert_eq!(who, id, "LUN {} changed identity", n);
                    }
                }
            }
        }
    }
}
