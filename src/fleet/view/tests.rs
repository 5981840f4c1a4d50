//! The view's transitions on what a full read and the watch deliver, and
//! the report ages it shows, on tokio's paused clock.

use std::time::Duration;

use super::*;
use crate::fleet::report::WireWindow;
use crate::rollout::machine::{Phase, RolloutState};

fn view() -> View {
    View::new(Keys::new("/fleet"), "me".into())
}

fn entry(key: &str, value: Vec<u8>, create_revision: i64, mod_revision: i64) -> Entry {
    Entry {
        key: key.into(),
        value,
        create_revision,
        mod_revision,
    }
}

fn state(epoch: u64, weight: f64, revision: i64) -> Entry {
    let doc = FleetState {
        state: RolloutState {
            phase: Phase::Canary,
            step: 0,
            weight,
            step_started_ms: 1,
            paused_from: None,
            decisions: Vec::new(),
            updated_ms: 1,
        },
        epoch,
        written_by: "leader".into(),
        identity: "test".into(),
    };
    entry(
        "/fleet/state",
        serde_json::to_vec(&doc).unwrap(),
        2,
        revision,
    )
}

fn leader(id: &str, term: i64) -> Entry {
    entry("/fleet/leader", id.as_bytes().to_vec(), term, term)
}

fn report(id: &str, epoch: u64, revision: i64) -> Entry {
    let report = Report {
        replica_id: id.into(),
        epoch,
        at_ms: 1,
        weight: 0.0,
        window: WireWindow::default(),
    };
    let key = format!("/fleet/replicas/{id}");
    entry(
        &key,
        serde_json::to_vec(&report).unwrap(),
        revision,
        revision,
    )
}

#[test]
fn a_state_is_adopted_and_only_a_new_epoch_starts_a_new_window() {
    let mut view = view();
    let first = view.put(&state(1, 0.0, 5)).expect("a state to adopt");
    assert!(first.new_window);
    assert_eq!(
        (view.have_state, view.state_revision, view.epoch),
        (true, 5, 1)
    );

    let same_epoch = view.put(&state(1, 10.0, 7)).expect("a state to adopt");
    assert!(!same_epoch.new_window, "a weight change in the same step");
    assert_eq!(same_epoch.doc.state.weight, 10.0);
    assert_eq!(view.state_revision, 7);

    assert!(view.put(&state(2, 50.0, 9)).unwrap().new_window);

    let unreadable = entry("/fleet/state", b"{".to_vec(), 2, 11);
    assert!(view.put(&unreadable).is_none());
    assert_eq!(
        view.state_revision, 9,
        "an unreadable state changes nothing"
    );

    view.delete("/fleet/state");
    assert_eq!((view.have_state, view.state_revision), (false, 0));
    assert_eq!(view.epoch, 2, "the epoch is kept for the next state");
}

#[test]
fn leader_evidence_and_reports_follow_puts_and_deletes() {
    let mut view = view();
    assert!(view.put(&leader("other", 4)).is_none());
    assert_eq!(view.leader, Some(("other".into(), 4)));
    view.put(&report("r1", 1, 6));
    view.put(&report("r2", 1, 7));
    view.put(&entry("/fleet/replicas/bad", b"not json".to_vec(), 8, 8));
    assert_eq!(view.reports.keys().collect::<Vec<_>>(), ["r1", "r2"]);

    view.delete("/fleet/replicas/r1");
    view.delete("/fleet/leader");
    assert_eq!(view.reports.keys().collect::<Vec<_>>(), ["r2"]);
    assert_eq!(view.leader, None);
}

#[test]
fn a_resync_keeps_the_leadership_only_while_our_leader_key_stands() {
    let mut view = view();
    view.term = Some(10);
    view.put(&report("gone", 1, 3));
    let adopt = view.resync(&[leader("me", 10), state(1, 0.0, 12)]);
    assert_eq!(view.term, Some(10), "our key, same create revision");
    assert!(adopt.is_some_and(|a| a.new_window));
    assert!(
        view.reports.is_empty(),
        "a report missing from the read is gone"
    );

    // Our lease expired while cut off and we campaigned again elsewhere:
    // same id, another create revision. Not the term we hold.
    view.resync(&[leader("me", 20)]);
    assert_eq!(view.term, None);
    assert!(!view.have_state, "no state key in the read");

    view.term = Some(20);
    view.resync(&[leader("other", 30)]);
    assert_eq!(view.term, None);
    assert_eq!(view.leader, Some(("other".into(), 30)));

    view.term = Some(30);
    view.resync(&[]);
    assert_eq!((view.term, view.leader.clone()), (None, None));
}

#[tokio::test(start_paused = true)]
async fn report_ages_count_from_when_the_replica_saw_them() {
    let mut view = view();
    view.put(&report("r1", 1, 3));
    tokio::time::advance(Duration::from_secs(3)).await;
    view.put(&report("r2", 1, 4));
    tokio::time::advance(Duration::from_secs(1)).await;

    let status = view.status_json("/fleet");
    let ages: Vec<_> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["report_age_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ages, [("r1", 4_000), ("r2", 1_000)]);

    // A newer report of r1 starts its age over.
    view.put(&report("r1", 1, 5));
    let status = view.status_json("/fleet");
    assert_eq!(status["replicas"][0]["report_age_ms"], 0);
}

#[test]
fn the_status_names_the_leader_and_our_term() {
    let mut view = view();
    view.put(&leader("other", 4));
    let status = view.status_json("/fleet");
    assert_eq!(status["leader"], "other");
    assert_eq!(
        (status["is_leader"].clone(), status["term"].clone()),
        (false.into(), 4.into())
    );

    view.term = Some(9);
    view.leader = Some(("me".into(), 9));
    view.connected = true;
    let status = view.status_json("/fleet");
    assert_eq!(
        (status["is_leader"].clone(), status["term"].clone()),
        (true.into(), 9.into())
    );
    assert!(view.leading());
    view.connected = false;
    assert!(!view.leading(), "no leader gauge while cut off from etcd");
}
