//! Whether a document's previous event is published: the rule that keeps
//! each product's first copies in order across relays.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use super::{PriorState, Remote, SeqState};
use crate::events::ChangeEvent;

/// Whether the event a document held before our write is published.
pub(super) fn prior_state(
    prior: &ChangeEvent,
    me: &str,
    through: u64,
    open: &BTreeMap<u64, SeqState>,
    remotes: &HashMap<String, Remote>,
    lease: Duration,
) -> PriorState {
    let seq = prior.meta.seq;
    if prior.meta.relay == me {
        if seq <= through {
            return PriorState::Published;
        }
        return match open.get(&seq) {
            Some(SeqState::Sent | SeqState::Done) | None => PriorState::Published,
            Some(SeqState::Abandoned) => PriorState::PublishIt,
            Some(SeqState::Reserved | SeqState::Unresolved | SeqState::Queued) => PriorState::Wait,
        };
    }
    match remotes.get(&prior.meta.relay) {
        Some(remote) if remote.record.through >= seq => PriorState::Published,
        // Stopped after publishing everything it had.
        Some(remote) if remote.record.stopped && remote.record.swept_by.is_none() => {
            PriorState::Published
        }
        // Died: what it held in memory is ours to publish (a sweep only
        // finds what is still in documents).
        Some(remote)
            if remote.record.swept_by.is_some() || remote.beat_changed.elapsed() >= lease =>
        {
            PriorState::PublishIt
        }
        _ => PriorState::Wait,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashMap},
        time::{Duration, Instant},
    };

    use super::{prior_state, PriorState, Remote, SeqState};
    use crate::events::RelayRecord;
    use crate::events::{ChangeEvent, EventKind, EventMeta};

    const LEASE: Duration = Duration::from_secs(10);

    fn prior(relay: &str, seq: u64) -> ChangeEvent {
        ChangeEvent {
            meta: EventMeta {
                id: "e".to_owned(),
                kind: EventKind::Created,
                relay: relay.to_owned(),
                seq,
                time: chrono::Utc::now(),
                traceparent: None,
                tracestate: None,
            },
            product_id: "5f1a2b3c4d5e6f7a8b9c0d1e".parse().unwrap(),
            rev: 1,
            state: None,
        }
    }

    fn remote(through: u64, stopped: bool, swept: bool, quiet_for: Duration) -> Remote {
        Remote {
            record: RelayRecord {
                id: "other".to_owned(),
                through,
                beat: 7,
                stopped,
                swept_by: swept.then(|| "sweeper".to_owned()),
            },
            beat_changed: Instant::now() - quiet_for,
        }
    }

    fn state(prior_seq: u64, through: u64, open: &[(u64, SeqState)]) -> PriorState {
        let open: BTreeMap<u64, SeqState> = open.iter().copied().collect();
        prior_state(
            &prior("me", prior_seq),
            "me",
            through,
            &open,
            &HashMap::new(),
            LEASE,
        )
    }

    fn remote_state(prior_seq: u64, other: Option<Remote>) -> PriorState {
        let remotes: HashMap<String, Remote> =
            other.into_iter().map(|r| ("other".to_owned(), r)).collect();
        prior_state(
            &prior("other", prior_seq),
            "me",
            0,
            &BTreeMap::new(),
            &remotes,
            LEASE,
        )
    }

    #[test]
    fn our_own_prior_is_published_once_acknowledged_or_handed_to_the_producer() {
        assert!(matches!(state(3, 5, &[]), PriorState::Published));
        assert!(matches!(
            state(6, 5, &[(6, SeqState::Sent)]),
            PriorState::Published
        ));
        assert!(matches!(
            state(6, 5, &[(6, SeqState::Done)]),
            PriorState::Published
        ));
        for waiting in [SeqState::Reserved, SeqState::Unresolved, SeqState::Queued] {
            assert!(matches!(state(6, 5, &[(6, waiting)]), PriorState::Wait));
        }
        // Written (the document showed it) but lost track of: publish it.
        assert!(matches!(
            state(6, 5, &[(6, SeqState::Abandoned)]),
            PriorState::PublishIt
        ));
    }

    #[test]
    fn another_relays_prior_waits_for_its_checkpoint_unless_that_relay_died() {
        let live = Duration::from_secs(1);
        assert!(matches!(
            remote_state(4, Some(remote(4, false, false, live))),
            PriorState::Published
        ));
        assert!(matches!(
            remote_state(5, Some(remote(4, false, false, live))),
            PriorState::Wait
        ));
        // Stopped gracefully: it published everything it had.
        assert!(matches!(
            remote_state(5, Some(remote(4, true, false, live))),
            PriorState::Published
        ));
        // Dead (silent for the lease) or swept: what it held is ours to publish.
        assert!(matches!(
            remote_state(5, Some(remote(4, false, false, LEASE))),
            PriorState::PublishIt
        ));
        assert!(matches!(
            remote_state(5, Some(remote(4, true, true, live))),
            PriorState::PublishIt
        ));
        // Not seen yet: wait for the next look at the relays.
        assert!(matches!(remote_state(5, None), PriorState::Wait));
    }
}
