//! The core, event by event: each test pins a defect the simulation found while the core
//! was written (the simulation's seeds change with it; these do not).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::mgr::{Member, MemberRole, MemberState};

const A: &str = "00000000-0000-0000-0000-000000000001";
const B: &str = "00000000-0000-0000-0000-000000000002";
const C: &str = "00000000-0000-0000-0000-000000000003";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write() -> IpAddr {
    ip("198.51.100.50")
}

fn read() -> IpAddr {
    ip("198.51.100.61")
}

fn config() -> Config {
    Config {
        write_vip: Some(write()),
        read_vips: vec![read()],
        floating: FloatingType::ToAnotherSecondary,
        timing: Timing::DEFAULT,
        late_tick: ms(500),
    }
}

fn member(uuid: &str, primary: bool) -> Member {
    Member {
        uuid: uuid.into(),
        host: format!("host-{}", &uuid[uuid.len() - 1..]),
        port: Some(3306),
        state: MemberState::Online,
        role: Some(if primary {
            MemberRole::Primary
        } else {
            MemberRole::Secondary
        }),
    }
}

/// The view of `me` in a group of A, B, C with `primary`.
fn view(me: &str, primary: &str) -> NodeStatus {
    let members = [A, B, C].iter().map(|u| member(u, *u == primary)).collect();
    if me == primary {
        NodeStatus::Primary {
            me: me.into(),
            members,
        }
    } else {
        NodeStatus::Secondary {
            me: me.into(),
            members,
        }
    }
}

fn row(holder: &str, term: u64, renewals: u64, settled: bool) -> LeaseRow {
    LeaseRow {
        holder: holder.into(),
        term,
        renewals,
        settled,
    }
}

fn polled(
    core: &mut Core,
    now: Duration,
    me: &str,
    primary: &str,
    r: Option<LeaseRow>,
) -> Vec<Effect> {
    core.handle(
        now,
        Event::Polled {
            view: view(me, primary),
            me: Some(me.into()),
            row: r,
        },
    )
}

fn commit_of(effects: &[Effect]) -> Option<(u64, LeaseOp)> {
    effects.iter().find_map(|e| match e {
        Effect::Commit { attempt, op } => Some((*attempt, op.clone())),
        _ => None,
    })
}

fn binds(effects: &[Effect]) -> BTreeSet<IpAddr> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Bind { vip, .. } => Some(*vip),
            _ => None,
        })
        .collect()
}

/// A, the primary, with the write lease taken fresh (no earlier holder) and bound.
fn holding_a() -> (Core, Duration) {
    let mut core = Core::new(config());
    core.handle(
        ms(0),
        Event::Listed {
            bound: BTreeSet::new(),
        },
    );
    let out = polled(&mut core, ms(0), A, A, None);
    let (attempt, op) = commit_of(&out).expect("a take");
    assert_eq!(op, LeaseOp::Take { expect: None });
    let out = core.handle(
        ms(5),
        Event::Committed {
            attempt,
            result: Ok(row(A, 1, 0, false)),
        },
    );
    assert!(binds(&out).contains(&write()), "{out:?}");
    (core, ms(5))
}

#[test]
fn a_fresh_primary_takes_the_lease_and_binds() {
    let (core, now) = holding_a();
    assert!(core.may_hold(write(), now));
    assert_eq!(core.term(), Some(1));
}

#[test]
fn losing_the_lease_while_a_bind_is_in_flight_ends_the_kernel_lease_at_once() {
    let (mut core, now) = holding_a();
    // The Bound answer has not come back when the view says secondary.
    let out = polled(&mut core, now + ms(10), A, B, Some(row(A, 1, 0, false)));
    assert!(
        out.iter().any(|e| matches!(
            e,
            Effect::Extend { vip, until, .. } if *vip == write() && *until == now + ms(10)
        )),
        "{out:?}"
    );
    // Once bound, it is unbound.
    let out = core.handle(
        now + ms(11),
        Event::Bound {
            vip: write(),
            ok: true,
        },
    );
    assert!(out.contains(&Effect::Unbind { vip: write() }), "{out:?}");
}

#[test]
fn a_release_request_while_taking_is_refused_until_the_take_is_decided() {
    let mut core = Core::new(config());
    polled(&mut core, ms(0), A, A, None); // the take is in flight
    let out = core.handle(
        ms(1),
        Event::Request {
            req: 7,
            from: B.into(),
            request: Request::ReleaseWrite { term: 2 },
        },
    );
    assert!(out.contains(&Effect::PollNow));
    let out = polled(&mut core, ms(2), A, A, None);
    assert!(
        out.iter().any(|e| matches!(
            e,
            Effect::Answer {
                req: 7,
                response: Response::Refused { .. }
            }
        )),
        "{out:?}"
    );
}

#[test]
fn taking_back_an_unsettled_row_of_its_own_waits_for_any_earlier_lease() {
    // A took the row from B once but never waited B's lease out (not settled), and its
    // agent restarted: the new take must not count that version as a safe one.
    let mut core = Core::new(config());
    core.handle(
        ms(0),
        Event::Listed {
            bound: BTreeSet::new(),
        },
    );
    let out = polled(&mut core, ms(0), A, A, Some(row(A, 4, 0, false)));
    let (attempt, op) = commit_of(&out).unwrap();
    assert_eq!(
        op,
        LeaseOp::Take {
            expect: Some((4, 0))
        }
    );
    let out = core.handle(
        ms(5),
        Event::Committed {
            attempt,
            result: Ok(row(A, 5, 0, false)),
        },
    );
    assert!(!binds(&out).contains(&write()), "{out:?}");
    assert!(!core.may_hold(write(), ms(2000)));
    // The bound: first seen at 0, plus 3 s and the drift.
    let out = core.handle(ms(3030), Event::Tick);
    let _ = out;
    // Renewed meanwhile (due every second) so the lease itself is valid then.
    assert!(core.lease.waiting_for(ms(3000)).is_empty());
}

#[test]
fn a_new_term_of_the_same_authority_keeps_the_sub_leases_it_granted() {
    let (mut core, now) = holding_a();
    core.handle(
        now,
        Event::Bound {
            vip: write(),
            ok: true,
        },
    );
    // Term 1 plans (B and C answer Holdings: nothing), and grants the read VIP to B.
    let mut now = now;
    for _ in 0..3 {
        now += ms(1);
        core.handle(now, Event::Tick);
    }
    let asked: Vec<u64> = core
        .pending
        .iter()
        .filter(|(_, p)| matches!(p, Pending::Holdings { .. }))
        .map(|(c, _)| *c)
        .collect();
    for call in asked {
        core.handle(
            now,
            Event::Answer {
                call,
                result: Ok(Response::Holdings { vips: vec![] }),
            },
        );
    }
    let placement = core
        .auth
        .as_ref()
        .and_then(|a| a.placement.clone())
        .unwrap();
    let holder = placement.read.get(&read()).cloned().unwrap();
    let out = core.handle(
        now,
        Event::Request {
            req: 1,
            from: holder.clone(),
            request: Request::ReadLease { vips: vec![read()] },
        },
    );
    assert!(
        out.iter().any(|e| matches!(
            e,
            Effect::Answer { response: Response::ReadLease { grants, .. }, .. } if !grants.is_empty()
        )),
        "{out:?}"
    );
    // Its lease lapses (a late tick) and comes back in a new authority state: the grant
    // to the holder is still in force, so nobody else gets the VIP.
    now += ms(600);
    core.handle(now, Event::Tick);
    assert!(core.auth.is_none());
    let issued = core.issued.get(&read()).cloned().unwrap();
    assert_eq!(issued.member, holder);
}

#[test]
fn an_applied_answer_to_an_older_placement_does_not_free_the_newer_moves() {
    let mut auth = Authority {
        term: 3,
        ..Authority::default()
    };
    let older = Placement {
        write: Some((write(), A.into())),
        read: [(read(), B.to_string())].into(),
    };
    let newer = Placement {
        write: Some((write(), A.into())),
        read: [(read(), C.to_string())].into(),
    };
    auth.placement = Some(newer.clone());
    auth.grants.insert(
        read(),
        Grant {
            member: B.into(),
            until: ms(10_000),
        },
    );
    let mut core = Core::new(config());
    core.me = Some(A.into());
    core.auth = Some(auth);
    core.pending.insert(
        9,
        Pending::Apply {
            term: 3,
            member: B.into(),
            placement: older,
        },
    );
    // Straight to the answer handler: this core holds no lease, so a full step would
    // end its authority before the assertions.
    let mut out = Vec::new();
    core.answered(ms(100), 9, Ok(Response::Applied), &mut out);
    let auth = core.auth.as_ref().unwrap();
    // B applied the placement that left the VIP with it: its grant stands, and the
    // newer placement is pushed to it again.
    assert_eq!(auth.grants.get(&read()).map(|g| g.member.as_str()), Some(B));
    assert!(auth.to_push.contains_key(B));
}
