//! [`SearchIndex`]: the products, their trigram postings and their order.

use std::collections::{hash_map::Entry as MapEntry, BTreeMap, HashMap};

use memchr::memmem;
use roaring::RoaringBitmap;

use crate::fold::fold_into;

/// Separates the folded name from the folded description in a product's
/// text: never in valid UTF-8, so neither in a query nor in a trigram that
/// a query could ask for, and no match spans the two fields.
const FIELD_SEPARATOR: u8 = 0xFF;

/// Matches up to this many are put in order by a partial sort; more, by
/// walking the global order (cheaper once most products match).
const SORT_LIMIT: usize = 4096;

/// One page of matches and how many there are in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Hits<T> {
    pub total: usize,
    pub values: Vec<T>,
}

/// Where the index sorts a product: by name, then id (as the database's
/// `sort({name: 1, _id: 1})`, both by bytes).
type SortKey = (Box<str>, Box<str>);

struct Indexed<T> {
    key: SortKey,
    /// Folded name, [`FIELD_SEPARATOR`], folded description.
    text: Box<[u8]>,
    value: T,
}

/// What the index knows of one product id.
struct Known {
    rev: u64,
    /// Its slot while it is live; `None` once deleted.
    slot: Option<u32>,
}

/// The search index; `T` is what a search returns for each product (the
/// service keeps the domain product). Not synchronised: the service puts it
/// behind a read-write lock.
pub struct SearchIndex<T> {
    slots: Vec<Option<Indexed<T>>>,
    free_slots: Vec<u32>,
    known: HashMap<Box<str>, Known>,
    trigrams: HashMap<u32, RoaringBitmap>,
    order: BTreeMap<SortKey, u32>,
    live: RoaringBitmap,
}

impl<T> Default for SearchIndex<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free_slots: Vec::new(),
            known: HashMap::new(),
            trigrams: HashMap::new(),
            order: BTreeMap::new(),
            live: RoaringBitmap::new(),
        }
    }
}

impl<T: Clone> SearchIndex<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Live products indexed.
    pub fn len(&self) -> usize {
        self.live.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The revision the index holds for `id` (live or deleted).
    pub fn revision(&self, id: &str) -> Option<u64> {
        self.known.get(id).map(|known| known.rev)
    }

    /// Stores the product `id` at revision `rev` (created or changed);
    /// `false`, changing nothing, when the index already holds `rev` or a
    /// later revision of it.
    pub fn upsert(&mut self, id: &str, rev: u64, name: &str, description: &str, value: T) -> bool {
        let previous_slot = match self.known.get(id) {
            Some(known) if known.rev >= rev => return false,
            Some(known) => known.slot,
            None => None,
        };
        let text = folded_text(name, description);
        let key: SortKey = (name.into(), id.into());
        let slot = match previous_slot {
            Some(slot) => {
                match self.slots[slot as usize].take() {
                    Some(old) => {
                        if old.text != text {
                            self.unlink_trigrams(slot, &old.text);
                            link_trigrams(&mut self.trigrams, slot, &text);
                        }
                        self.order.remove(&old.key);
                    }
                    None => link_trigrams(&mut self.trigrams, slot, &text),
                }
                slot
            }
            None => {
                let slot = self.free_slots.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    // A catalog of 2^32 products would not fit in memory first.
                    (self.slots.len() - 1) as u32
                });
                link_trigrams(&mut self.trigrams, slot, &text);
                self.live.insert(slot);
                slot
            }
        };
        self.order.insert(key.clone(), slot);
        self.slots[slot as usize] = Some(Indexed { key, text, value });
        self.remember(id, rev, Some(slot));
        true
    }

    /// Removes the product `id`, deleted at revision `rev`; `false` when the
    /// index already holds `rev` or a later revision of it. The revision is
    /// remembered, so an older copy of the product arriving later (a replay)
    /// does not bring it back.
    pub fn remove(&mut self, id: &str, rev: u64) -> bool {
        let slot = match self.known.get(id) {
            Some(known) if known.rev >= rev => return false,
            Some(known) => known.slot,
            None => None,
        };
        if let Some(slot) = slot {
            if let Some(old) = self.slots[slot as usize].take() {
                self.unlink_trigrams(slot, &old.text);
                self.order.remove(&old.key);
            }
            self.live.remove(slot);
            self.free_slots.push(slot);
        }
        self.remember(id, rev, None);
        true
    }

    /// The products whose name or description contains `text` (case
    /// insensitive, literal), `offset..offset + limit` of them in (name, id)
    /// order, and how many there are. Empty text matches every product.
    pub fn search(&self, text: &str, offset: usize, limit: usize) -> Hits<T> {
        let mut query = String::with_capacity(text.len());
        fold_into(text, &mut query);
        let query = query.as_bytes();
        let matches = self.matches(query);
        let total = matches.len() as usize;
        let end = offset.saturating_add(limit).min(total);
        let values = if offset >= end {
            Vec::new()
        } else if total <= SORT_LIMIT {
            self.page_by_sorting(&matches, offset, end)
        } else {
            self.page_by_walking(&matches, offset, end)
        };
        Hits { total, values }
    }

    fn matches(&self, query: &[u8]) -> RoaringBitmap {
        if query.is_empty() {
            return self.live.clone();
        }
        let candidates = if query.len() < 3 {
            self.live.clone()
        } else {
            let mut postings = Vec::new();
            for window in query.windows(3) {
                match self.trigrams.get(&trigram(window)) {
                    Some(bitmap) => postings.push(bitmap),
                    None => return RoaringBitmap::new(),
                }
            }
            postings.sort_by_key(|bitmap| bitmap.len());
            let mut candidates = postings[0].clone();
            for bitmap in &postings[1..] {
                if candidates.is_empty() {
                    break;
                }
                candidates &= *bitmap;
            }
            candidates
        };
        let finder = memmem::Finder::new(query);
        candidates
            .into_iter()
            .filter(|&slot| {
                self.slots[slot as usize]
                    .as_ref()
                    .is_some_and(|product| finder.find(&product.text).is_some())
            })
            .collect()
    }

    fn page_by_sorting(&self, matches: &RoaringBitmap, offset: usize, end: usize) -> Vec<T> {
        let mut found: Vec<&Indexed<T>> = matches
            .iter()
            .filter_map(|slot| self.slots[slot as usize].as_ref())
            .collect();
        if end < found.len() {
            found.select_nth_unstable_by(end, |a, b| a.key.cmp(&b.key));
            found.truncate(end);
        }
        found.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        found[offset..]
            .iter()
            .map(|product| product.value.clone())
            .collect()
    }

    fn page_by_walking(&self, matches: &RoaringBitmap, offset: usize, end: usize) -> Vec<T> {
        self.order
            .values()
            .filter(|&&slot| matches.contains(slot))
            .take(end)
            .skip(offset)
            .filter_map(|&slot| self.slots[slot as usize].as_ref())
            .map(|product| product.value.clone())
            .collect()
    }

    fn remember(&mut self, id: &str, rev: u64, slot: Option<u32>) {
        // Looked up by `&str` first: a product already known (every change
        // after its create) costs no allocation of its id.
        match self.known.get_mut(id) {
            Some(known) => *known = Known { rev, slot },
            None => {
                self.known.insert(id.into(), Known { rev, slot });
            }
        }
    }

    fn unlink_trigrams(&mut self, slot: u32, text: &[u8]) {
        for gram in distinct_trigrams(text) {
            if let MapEntry::Occupied(mut bitmap) = self.trigrams.entry(gram) {
                bitmap.get_mut().remove(slot);
                if bitmap.get().is_empty() {
                    bitmap.remove();
                }
            }
        }
    }
}

fn folded_text(name: &str, description: &str) -> Box<[u8]> {
    let mut text = String::with_capacity(name.len() + description.len() + 1);
    fold_into(name, &mut text);
    let mut bytes = text.into_bytes();
    bytes.push(FIELD_SEPARATOR);
    let mut description_folded = String::with_capacity(description.len());
    fold_into(description, &mut description_folded);
    bytes.extend_from_slice(description_folded.as_bytes());
    bytes.into_boxed_slice()
}

fn link_trigrams(trigrams: &mut HashMap<u32, RoaringBitmap>, slot: u32, text: &[u8]) {
    for gram in distinct_trigrams(text) {
        trigrams.entry(gram).or_default().insert(slot);
    }
}

/// The text's 3-byte windows that do not cross the field separator, each once.
fn distinct_trigrams(text: &[u8]) -> Vec<u32> {
    let mut grams: Vec<u32> = text
        .windows(3)
        .filter(|window| !window.contains(&FIELD_SEPARATOR))
        .map(trigram)
        .collect();
    grams.sort_unstable();
    grams.dedup();
    grams
}

fn trigram(window: &[u8]) -> u32 {
    u32::from(window[0]) << 16 | u32::from(window[1]) << 8 | u32::from(window[2])
}

#[cfg(test)]
mod tests;
