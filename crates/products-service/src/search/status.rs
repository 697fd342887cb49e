//! How current the search index is.
//!
//! The feed asks the broker for the end of every partition, then reads on
//! until it has passed those ends: at that moment the index holds every
//! change stored before the question was asked, and `synced_at` moves to
//! the time of the question. So `now - synced_at` bounds how stale the
//! index can be, at any write rate; it grows while the topic is unreachable
//! or the feed falls behind (the metric `search_index_sync_age_seconds`).
//! The first such moment after the start ends the rebuild (`/ready` is
//! false before it).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

pub struct SyncStatus {
    started: Instant,
    /// Milliseconds after `started` the index was last known complete.
    synced_at_ms: AtomicU64,
    rebuilt: AtomicBool,
    /// Events in the topic not read yet, at the last question.
    behind: AtomicU64,
    /// The last question for the partitions' ends failed.
    unreachable: AtomicBool,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            synced_at_ms: AtomicU64::new(0),
            rebuilt: AtomicBool::new(false),
            behind: AtomicU64::new(0),
            unreachable: AtomicBool::new(false),
        }
    }
}

impl SyncStatus {
    /// The index holds every change stored before `asked_at`.
    pub fn synced(&self, asked_at: Instant) {
        let ms = asked_at.saturating_duration_since(self.started).as_millis();
        self.synced_at_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        if !self.rebuilt.swap(true, Ordering::Relaxed) {
            let took = self.started.elapsed();
            tracing::info!(?took, "search index rebuilt: serving searches");
            metrics::gauge!("search_index_rebuild_seconds").set(took.as_secs_f64());
        }
    }

    /// The answer to the last question: `behind` events unread, or none.
    pub fn asked(&self, behind: Option<u64>) {
        self.unreachable.store(behind.is_none(), Ordering::Relaxed);
        if let Some(behind) = behind {
            self.behind.store(behind, Ordering::Relaxed);
        }
    }

    /// Whether the index has caught up once since the start.
    pub fn rebuilt(&self) -> bool {
        self.rebuilt.load(Ordering::Relaxed)
    }

    /// How long the index has not been known complete (since the start,
    /// before the rebuild ends).
    pub fn age(&self) -> Duration {
        let synced = Duration::from_millis(self.synced_at_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(synced)
    }

    pub fn behind(&self) -> u64 {
        self.behind.load(Ordering::Relaxed)
    }

    pub fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// What `/ready` says of the index: an error while rebuilding, a
    /// warning (still serving) once it has been stale for `stale_after`.
    pub fn readiness(&self, stale_after: Duration) -> Result<Option<String>, String> {
        let why = if self.unreachable() {
            "the events topic is unreachable".to_owned()
        } else {
            format!("{} events to read", self.behind())
        };
        if !self.rebuilt() {
            return Err(format!("rebuilding the search index: {why}"));
        }
        let age = self.age();
        Ok((age > stale_after).then(|| {
            format!(
                "searches answer from an index last known complete {}s ago: {why}",
                age.as_secs()
            )
        }))
    }

    pub fn record_metrics(&self) {
        metrics::gauge!("search_index_sync_age_seconds").set(self.age().as_secs_f64());
        metrics::gauge!("search_index_behind_events").set(self.behind() as f64);
        metrics::gauge!("search_index_topic_reachable").set(if self.unreachable() {
            0.0
        } else {
            1.0
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::SyncStatus;

    #[test]
    fn not_ready_until_rebuilt_then_degraded_when_stale() {
        let status = SyncStatus::default();
        status.asked(Some(42));
        let err = status.readiness(Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("42 events to read"), "{err}");
        status.synced(Instant::now());
        assert!(status.rebuilt());
        assert_eq!(status.readiness(Duration::from_secs(10)), Ok(None));
        status.asked(None);
        let warning = status.readiness(Duration::ZERO).unwrap().unwrap();
        assert!(warning.contains("unreachable"), "{warning}");
        // An older answer never moves the sync time back.
        let before = status.age();
        status.synced(status.started);
        assert!(status.age() >= before);
    }
}
