//! The product search index each replica keeps in memory (issue 16).
//!
//! Search is a case-insensitive literal substring match over a product's
//! name or description, answered as a page of products sorted by name then
//! id plus the total count. No database index serves that (an unanchored,
//! case-insensitive regex scans every document), so each replica keeps this
//! index, fed by the change events (`products-service`'s `search` module).
//!
//! How a query is answered ([`SearchIndex::search`]):
//! 1. Text is case folded once ([`fold`]): each character becomes one
//!    representative of its Unicode simple case-folding orbit, the
//!    equivalence the databases' case-insensitive regexes use. Then a
//!    case-insensitive match is a byte substring match of folded texts.
//! 2. Every distinct 3-byte window (trigram) of a product's folded text
//!    points to the product (a roaring bitmap per trigram). A query of 3
//!    bytes or more can only match products that hold all its trigrams:
//!    the intersection, smallest bitmap first, is the candidate set. Shorter
//!    queries take every product as a candidate.
//! 3. Each candidate is checked with `memchr::memmem` (trigrams give false
//!    positives, never false negatives), which gives the exact count.
//! 4. The page is the matches' `offset..offset+limit` in (name, id) order:
//!    a partial sort when the matches are few, else a walk of the global
//!    order that stops at the page's end.
//!
//! Revisions make it idempotent: a change older than (or as old as) what
//! the index holds for that product is ignored, so replays and duplicates
//! of the event stream change nothing.

mod fold;
mod index;

pub use fold::{fold, fold_into};
pub use index::{Hits, SearchIndex};
