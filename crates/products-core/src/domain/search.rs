//! Search requests and result pages.
//!
//! Search text is a literal: the repository must match it as a
//! case-insensitive substring and never interpret it as a pattern.

use super::{error::Collector, Product, ValidationErrors};

/// Literal search text, trimmed, at most 250 characters; empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    pub const MAX_CHARS: usize = 250;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A validated, paginated search. Pages are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub text: SearchText,
    pub page: u64,
    pub size: u64,
}

impl SearchQuery {
    pub const DEFAULT_SIZE: u64 = 10;
    pub const MAX_SIZE: u64 = 100;

    /// Page 0 or absent means the first page (as the Go original); size 0 or
    /// absent means [`Self::DEFAULT_SIZE`]; a size above [`Self::MAX_SIZE`] is
    /// capped. Negative numbers are errors.
    pub fn parse(
        text: Option<&str>,
        page: Option<i64>,
        size: Option<i64>,
    ) -> Result<Self, ValidationErrors> {
        Self::build(text, Ok(page), Ok(size))
    }

    /// As [`Self::parse`], from query-string values: empty means absent, and
    /// a value that is not an integer is reported with the other errors.
    pub fn parse_params(
        text: Option<&str>,
        page: Option<&str>,
        size: Option<&str>,
    ) -> Result<Self, ValidationErrors> {
        Self::build(text, integer(page), integer(size))
    }

    fn build(
        text: Option<&str>,
        page: Result<Option<i64>, String>,
        size: Result<Option<i64>, String>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = Collector::default();
        let text = errors.check("search", SearchText::parse(text.unwrap_or_default()));
        let page = errors.check("page", page.and_then(non_negative));
        let size = errors.check("size", size.and_then(non_negative));
        errors.finish()?;
        Ok(Self {
            text: text.unwrap_or_default(),
            page: page.unwrap_or(0).max(1),
            size: match size.unwrap_or(0) {
                0 => Self::DEFAULT_SIZE,
                n => n.min(Self::MAX_SIZE),
            },
        })
    }

    /// How many results to skip to reach this page.
    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.size)
    }
}

fn integer(raw: Option<&str>) -> Result<Option<i64>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| "must be an integer".to_owned()),
    }
}

fn non_negative(value: Option<i64>) -> Result<u64, String> {
    match value {
        None => Ok(0),
        Some(n) => u64::try_from(n).map_err(|_| "must be 0 or more".to_owned()),
    }
}

/// One page of search results with the totals clients page through.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub total_count: u64,
    pub page: u64,
    pub size: u64,
    pub products: Vec<Product>,
}

impl SearchPage {
    pub fn total_pages(&self) -> u64 {
        self.total_count.div_ceil(self.size.max(1))
    }

    pub fn has_more(&self) -> bool {
        self.page < self.total_pages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_edges() {
        let q = SearchQuery::parse(None, None, None).unwrap();
        assert_eq!(
            (q.page, q.size, q.offset()),
            (1, SearchQuery::DEFAULT_SIZE, 0)
        );
        let q = SearchQuery::parse(Some(" mug "), Some(0), Some(1_000_000)).unwrap();
        assert_eq!(
            (q.text.as_str(), q.page, q.size),
            ("mug", 1, SearchQuery::MAX_SIZE)
        );
        let q = SearchQuery::parse(None, Some(3), Some(20)).unwrap();
        assert_eq!(q.offset(), 40);
    }

    #[test]
    fn negative_numbers_are_reported_together() {
        let err = SearchQuery::parse(Some(&"x".repeat(251)), Some(-1), Some(-5)).unwrap_err();
        assert_eq!(err.fields().len(), 3);
    }

    #[test]
    fn query_string_values_report_every_error() {
        let err = SearchQuery::parse_params(None, Some("-1"), Some("x")).unwrap_err();
        let fields: Vec<&str> = err.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["page", "size"]);
        let q = SearchQuery::parse_params(Some("a"), Some(""), Some(" 5 ")).unwrap();
        assert_eq!((q.page, q.size), (1, 5));
    }

    #[test]
    fn page_totals() {
        let page = SearchPage {
            total_count: 21,
            page: 2,
            size: 10,
            products: vec![],
        };
        assert_eq!(page.total_pages(), 3);
        assert!(page.has_more());
        let last = SearchPage {
            page: 3,
            ..page.clone()
        };
        assert!(!last.has_more());
        let empty = SearchPage {
            total_count: 0,
            page: 1,
            size: 10,
            products: vec![],
        };
        assert_eq!(empty.total_pages(), 0);
        assert!(!empty.has_more());
    }
}
