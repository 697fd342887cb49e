//! Updates waiting for their product's create. Creates and updates travel on
//! different topics, so an update can arrive first; it then waits here,
//! and so does every later update of the same product (their order is
//! kept), while the partition goes on applying other products' records.
//! Each waiting record has a deadline (`kafka.consumer.not_found_wait_ms`
//! after it arrived); past it the worker dead-letters it as
//! `ProductNotFound`. Pure bookkeeping: the partition worker does the I/O.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use products_core::domain::ProductId;

/// One record waiting, with when to try it next and when to give up.
#[derive(Debug)]
pub struct Waiting<T> {
    pub item: T,
    pub deadline: Instant,
    pub next_try: Instant,
    pub tries: u32,
}

#[derive(Debug)]
pub struct WaitingRoom<T> {
    queues: HashMap<ProductId, VecDeque<Waiting<T>>>,
    len: usize,
    limit: usize,
    budget: Duration,
    first_retry: Duration,
    max_retry: Duration,
}

impl<T> WaitingRoom<T> {
    /// `limit`: records that may wait at once (the worker takes no new
    /// records while full); `budget`: how long one record may wait.
    pub fn new(limit: usize, budget: Duration, first_retry: Duration, max_retry: Duration) -> Self {
        Self {
            queues: HashMap::new(),
            len: 0,
            limit: limit.max(1),
            budget,
            first_retry,
            max_retry: max_retry.max(first_retry),
        }
    }

    /// Whether records of this product are waiting (a later one must queue
    /// behind them).
    pub fn holds(&self, key: &ProductId) -> bool {
        self.queues.contains_key(key)
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a record that just arrived behind this product's others.
    pub fn push_back(&mut self, key: ProductId, item: T, now: Instant, tried: bool) {
        let waiting = Waiting {
            item,
            deadline: now + self.budget,
            next_try: if tried { now + self.first_retry } else { now },
            tries: u32::from(tried),
        };
        self.queues.entry(key).or_default().push_back(waiting);
        self.len += 1;
    }

    /// Puts back a head that was tried and must wait on (next try later,
    /// with a doubling delay).
    pub fn retry_later(&mut self, key: ProductId, mut waiting: Waiting<T>, now: Instant) {
        waiting.tries += 1;
        let delay = self
            .first_retry
            .saturating_mul(1 << waiting.tries.min(16))
            .min(self.max_retry);
        waiting.next_try = (now + delay).min(waiting.deadline);
        self.queues.entry(key).or_default().push_front(waiting);
        self.len += 1;
    }

    /// When the next head is due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter_map(|queue| queue.front().map(|w| w.next_try))
            .min()
    }

    /// A product whose first waiting record is due now.
    pub fn due_key(&self, now: Instant) -> Option<ProductId> {
        self.queues
            .iter()
            .find(|(_, queue)| queue.front().is_some_and(|w| w.next_try <= now))
            .map(|(key, _)| key.clone())
    }

    /// Takes the first waiting record of a product.
    pub fn pop_front(&mut self, key: &ProductId) -> Option<Waiting<T>> {
        let queue = self.queues.get_mut(key)?;
        let waiting = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(key);
        }
        if waiting.is_some() {
            self.len -= 1;
        }
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ProductId {
        ProductId::from_bytes([n; 12])
    }

    fn room() -> WaitingRoom<&'static str> {
        WaitingRoom::new(
            3,
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn later_records_of_a_product_queue_behind_the_first() {
        let mut room = room();
        let now = Instant::now();
        room.push_back(id(1), "first", now, true);
        assert!(room.holds(&id(1)));
        assert!(!room.holds(&id(2)));
        room.push_back(id(1), "second", now, false);
        assert_eq!(room.len(), 2);
        assert_eq!(room.due_key(now), None, "the first was just tried");
        let later = now + Duration::from_millis(100);
        assert_eq!(room.due_key(later), Some(id(1)));
        assert_eq!(room.pop_front(&id(1)).map(|w| w.item), Some("first"));
        assert_eq!(room.pop_front(&id(1)).map(|w| w.item), Some("second"));
        assert!(!room.holds(&id(1)));
        assert_eq!(room.len(), 0);
    }

    #[test]
    fn retries_back_off_but_never_past_the_deadline() {
        let mut room = room();
        let now = Instant::now();
        room.push_back(id(1), "update", now, true);
        let mut at = now;
        for _ in 0..10 {
            let waiting = room.pop_front(&id(1)).unwrap();
            room.retry_later(id(1), waiting, at);
            at = room.next_due().unwrap();
        }
        assert!(at <= now + Duration::from_secs(10));
        let waiting = room.pop_front(&id(1)).unwrap();
        assert_eq!(waiting.deadline, now + Duration::from_secs(10));
    }

    #[test]
    fn is_full_at_its_limit() {
        let mut room = room();
        let now = Instant::now();
        for n in 0..3 {
            assert!(!room.is_full());
            room.push_back(id(n), "update", now, true);
        }
        assert!(room.is_full());
    }
}
