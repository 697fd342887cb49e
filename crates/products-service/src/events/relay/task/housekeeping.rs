//! The relay's housekeeping, every `checkpoint_interval_ms`: save the
//! checkpoint and heartbeat, look at the other relays, sweep the dead ones;
//! and reading back writes whose outcome is unknown.

use std::time::{Duration, Instant};

use chrono::Utc;
use products_core::domain::ProductId;
use tokio::sync::OwnedSemaphorePermit;

use super::{Message, RelayRecord, RelayTask, Remote};

impl RelayTask {
    pub(super) fn finish_sweep(&mut self, relay: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            // If this fails the relay stays "swept, not finished": waiters
            // treat it as dead and publish what they hold; nothing is lost.
            if let Err(err) = store.finish_sweep(&relay).await {
                tracing::warn!(relay = %relay, error = %err, "sweep not recorded as finished");
            }
        });
    }

    /// Moves `through` past every settled sequence number.
    pub(super) fn spawn_resolution(
        &self,
        seq: u64,
        product_id: ProductId,
        permit: OwnedSemaphorePermit,
    ) {
        let store = self.store.clone();
        let messages = self.shared.messages.clone();
        let relay = self.shared.id.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let event = loop {
                match store.last_event(&product_id).await {
                    Ok(found) => {
                        break found
                            .filter(|e| e.meta.relay == relay && e.meta.seq == seq)
                            .map(Box::new);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot read back an unknown write yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let _ = messages.send(Message::Resolved {
                seq,
                product_id,
                event,
                permit,
            });
        });
    }

    /// Every `checkpoint_interval_ms`: retry what waits, save the checkpoint,
    /// look at the other relays.
    pub(super) fn tick(&mut self, stopping: bool) {
        for product_id in self.waiting.clone() {
            self.pump(&product_id);
        }
        self.advance();
        self.report();
        if self.housekeeping.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let beat_due = self.last_beat.elapsed() >= Duration::from_secs(1);
        if beat_due {
            self.beat += 1;
            self.last_beat = Instant::now();
        }
        let save = (self.saved != Some((self.through, self.beat))).then(|| RelayRecord {
            id: self.shared.id.clone(),
            through: self.through,
            beat: self.beat,
            stopped: false,
            swept_by: None,
        });
        let look = !self.waiting.is_empty() || (beat_due && !stopping);
        if save.is_none() && !look {
            return;
        }
        if save.is_some() {
            self.saved = Some((self.through, self.beat));
        }
        let store = self.store.clone();
        let messages = self.shared.messages.clone();
        self.housekeeping = Some(tokio::spawn(async move {
            if let Some(record) = save {
                if let Err(err) = store.save_relay(&record).await {
                    tracing::debug!(error = %err, "relay checkpoint not saved");
                }
            }
            if look {
                match store.relays().await {
                    Ok(records) => {
                        let _ = messages.send(Message::Relays(records));
                    }
                    Err(err) => tracing::debug!(error = %err, "relays not read"),
                }
            }
        }));
    }

    pub(super) fn report(&self) {
        metrics::gauge!("product_events_pending").set(self.pending_since.len() as f64);
        let oldest = self
            .pending_since
            .values()
            .min()
            .map(|t| (Utc::now() - *t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("product_events_oldest_pending_seconds").set(oldest);
    }

    pub(super) fn observe_relays(&mut self, records: Vec<RelayRecord>) {
        let now = Instant::now();
        for record in records {
            if record.id == self.shared.id {
                continue;
            }
            match self.remotes.get_mut(&record.id) {
                Some(remote) => {
                    if remote.record.beat != record.beat {
                        remote.beat_changed = now;
                    }
                    remote.record = record;
                }
                None => {
                    self.remotes.insert(
                        record.id.clone(),
                        Remote {
                            record,
                            beat_changed: now,
                        },
                    );
                }
            }
        }
        let dead: Vec<String> = self
            .remotes
            .values()
            .filter(|r| {
                !r.record.stopped
                    && r.record.swept_by.is_none()
                    && r.beat_changed.elapsed() >= self.lease
                    && !self.sweeping.contains_key(&r.record.id)
            })
            .map(|r| r.record.id.clone())
            .collect();
        for relay in dead {
            let after = self.remotes[&relay].record.through;
            self.sweeping.insert(relay.clone(), usize::MAX);
            let store = self.store.clone();
            let messages = self.shared.messages.clone();
            let me = self.shared.id.clone();
            tokio::spawn(async move {
                let events = match store.claim_sweep(&relay, &me).await {
                    Ok(true) => match store.events_of(&relay, after).await {
                        Ok(events) => Some(events),
                        Err(err) => {
                            tracing::warn!(relay = %relay, error = %err, "sweep failed; retrying later");
                            None
                        }
                    },
                    Ok(false) => None,
                    Err(err) => {
                        tracing::debug!(error = %err, "sweep not claimed");
                        None
                    }
                };
                let _ = messages.send(Message::Swept { relay, events });
            });
        }
        for product_id in self.waiting.clone() {
            self.pump(&product_id);
        }
    }
}
