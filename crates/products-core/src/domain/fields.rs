//! Field value types of a product. Each constructor enforces the rule the
//! public contract states (README, "APIs") and returns a human-readable reason.

use std::fmt;

macro_rules! text_field {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub const MIN_CHARS: usize = $min;
            pub const MAX_CHARS: usize = $max;

            /// Trims surrounding whitespace, then checks the length in characters.
            pub fn parse(raw: &str) -> Result<Self, String> {
                let trimmed = raw.trim();
                let chars = trimmed.chars().count();
                if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
                    return Err(format!(
                        "must be between {} and {} characters (got {chars})",
                        Self::MIN_CHARS,
                        Self::MAX_CHARS
                    ));
                }
                if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    return Err("must not contain control characters".to_owned());
                }
                Ok(Self(trimmed.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_field!(
    /// Product name: 3 to 250 characters.
    ProductName, 3, 250
);
text_field!(
    /// Product description: 3 to 500 characters.
    Description, 3, 500
);

/// Price: a finite number greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Price(f64);

impl Price {
    pub fn parse(raw: f64) -> Result<Self, String> {
        if !raw.is_finite() {
            return Err("must be a finite number".to_owned());
        }
        if raw <= 0.0 {
            return Err("must be greater than 0".to_owned());
        }
        Ok(Self(raw))
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

/// Units in stock: zero or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i64);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if raw < 0 {
            return Err("must be 0 or more".to_owned());
        }
        Ok(Self(raw))
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// Rating from 0 to 10 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rating(i64);

impl Rating {
    pub const MAX: i64 = 10;

    pub fn parse(raw: i64) -> Result<Self, String> {
        if !(0..=Self::MAX).contains(&raw) {
            return Err(format!("must be between 0 and {}", Self::MAX));
        }
        Ok(Self(raw))
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// An absolute `http` or `https` URL with a host, at most 2048 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("must be a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".to_owned());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must have a host".to_owned());
        }
        // The URL is stored as normalised, which percent-encodes (a space
        // becomes `%20`): the limit holds for what is stored, or the consumer
        // would reject a command the REST edge accepted.
        let normalised = String::from(url);
        if normalised.len() > Self::MAX_LEN {
            return Err(format!(
                "must be at most {} characters once percent-encoded",
                Self::MAX_LEN
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(ProductName::parse("ab").is_err());
        assert!(ProductName::parse("äöü").is_ok());
        assert!(ProductName::parse(&"x".repeat(250)).is_ok());
        assert!(ProductName::parse(&"x".repeat(251)).is_err());
        assert!(
            ProductName::parse("   ab   ").is_err(),
            "whitespace is trimmed first"
        );
    }

    #[test]
    fn description_bounds() {
        assert!(Description::parse(&"d".repeat(500)).is_ok());
        assert!(Description::parse(&"d".repeat(501)).is_err());
        assert!(Description::parse("a\u{0}b").is_err());
    }

    #[test]
    fn price_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Price::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Price::parse(0.01).unwrap().value(), 0.01);
    }

    #[test]
    fn rating_and_quantity_ranges() {
        assert!(Rating::parse(-1).is_err());
        assert!(Rating::parse(11).is_err());
        assert!(Rating::parse(0).is_ok() && Rating::parse(10).is_ok());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(0).is_ok());
    }

    #[test]
    fn urls_must_be_http_with_host() {
        assert!(HttpUrl::parse("https://cdn.example.com/a.png").is_ok());
        for bad in [
            "",
            "not a url",
            "ftp://x.y/z",
            "javascript:alert(1)",
            "http://",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Regression (found by fuzz/rest_product): 2013 characters passed, but
    /// normalised (`%20`) they were 3011, so the consumer rejected the command
    /// the REST edge had accepted with 202.
    #[test]
    fn url_limit_holds_for_the_normalised_url() {
        let raw = format!("http://a.com/{}", "x ".repeat(1000));
        assert!(raw.trim().len() <= HttpUrl::MAX_LEN);
        assert!(HttpUrl::parse(&raw).is_err());
        let fits = format!("http://a.com/{}", "x".repeat(2000));
        let parsed = HttpUrl::parse(&fits).unwrap();
        assert_eq!(HttpUrl::parse(parsed.as_str()), Ok(parsed));
    }
}
