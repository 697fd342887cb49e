//! Which offset of a partition may be committed. Records are received in
//! offset order but settle (applied, dead-lettered) out of order: an update
//! waiting for its create stays unsettled while later records of other
//! products are applied. The committed position is the oldest unsettled
//! record, never past it; so a crash re-reads every record that had not
//! settled (and the later ones, whose replay is a no-op).

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    unsettled: BTreeSet<i64>,
    /// One past the highest offset received.
    end: Option<i64>,
    /// The last position handed out by [`Self::advance`].
    stored: Option<i64>,
}

impl OffsetTracker {
    /// A record was received (in offset order).
    pub fn received(&mut self, offset: i64) {
        self.unsettled.insert(offset);
        self.end = Some(self.end.map_or(offset + 1, |end| end.max(offset + 1)));
    }

    /// A record settled.
    pub fn settled(&mut self, offset: i64) {
        self.unsettled.remove(&offset);
    }

    /// The position to commit (the next offset to read after a restart):
    /// the oldest unsettled record, or the end if all settled.
    pub fn committable(&self) -> Option<i64> {
        self.unsettled.first().copied().or(self.end)
    }

    /// The committable position if it moved since the last call.
    pub fn advance(&mut self) -> Option<i64> {
        let next = self.committable()?;
        if self.stored.is_some_and(|stored| stored >= next) {
            return None;
        }
        self.stored = Some(next);
        Some(next)
    }

    pub fn unsettled(&self) -> usize {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::OffsetTracker;

    #[test]
    fn waits_for_the_oldest_unsettled_record() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.received(offset);
        }
        tracker.settled(11);
        tracker.settled(12);
        assert_eq!(tracker.advance(), Some(10));
        tracker.settled(10);
        assert_eq!(tracker.advance(), Some(13));
        tracker.settled(14);
        assert_eq!(tracker.advance(), None);
        tracker.settled(13);
        assert_eq!(tracker.advance(), Some(15));
    }

    proptest! {
        /// For any order of completions, the position handed out never
        /// passes a record that has not settled, never goes back, and
        /// reaches the end once all settled.
        #[test]
        fn never_passes_an_unsettled_record(
            start in 0i64..1_000,
            order in Just((0..40usize).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut tracker = OffsetTracker::default();
            let offsets: Vec<i64> = (0..order.len() as i64).map(|i| start + i).collect();
            for &offset in &offsets {
                tracker.received(offset);
            }
            let mut settled = std::collections::BTreeSet::new();
            let mut last = None;
            for &i in &order {
                tracker.settled(offsets[i]);
                settled.insert(offsets[i]);
                if let Some(position) = tracker.advance() {
                    prop_assert!(last.is_none_or(|last| position > last));
                    // Every record before the position has settled.
                    for offset in start..position {
                        prop_assert!(settled.contains(&offset), "{offset} unsettled below {position}");
                    }
                    last = Some(position);
                }
            }
            prop_assert_eq!(last, Some(start + offsets.len() as i64));
        }
    }
}
