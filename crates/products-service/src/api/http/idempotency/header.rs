//! The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header):
//! a structured-field string (`"…"`, printable ASCII, `\"` and `\\`
//! escapes), or, leniently, a bare token (letters, digits, `!#$%&'*+-.^_`|~`,
//! `:` and `/`, so a bare UUID works). At most 255 characters once unquoted,
//! not empty, sent once. Parameters (`;a=b`) and anything else are refused.

use axum::http::{HeaderMap, HeaderName};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The longest key accepted, in characters (ASCII only, so bytes too).
pub const MAX_KEY_CHARS: usize = 255;

/// Why an `Idempotency-Key` header is refused (400). The messages name the
/// rule, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyHeaderError {
    #[error("Idempotency-Key must be sent once")]
    Repeated,
    #[error("Idempotency-Key must not be empty")]
    Empty,
    #[error("Idempotency-Key must be at most 255 characters")]
    TooLong,
    #[error("Idempotency-Key must be a quoted string (\"...\", printable ASCII) or a bare token")]
    Malformed,
}

/// The key of a request: `None` without the header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, KeyHeaderError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyHeaderError::Repeated);
    }
    parse(value.as_bytes()).map(Some)
}

/// One header value to its key.
pub fn parse(value: &[u8]) -> Result<String, KeyHeaderError> {
    let value = value.trim_ascii();
    let key = match value.first() {
        None => return Err(KeyHeaderError::Empty),
        Some(b'"') => sf_string(value)?,
        Some(_) if value.iter().copied().all(is_token_char) => {
            // All ASCII, checked above.
            String::from_utf8_lossy(value).into_owned()
        }
        Some(_) => return Err(KeyHeaderError::Malformed),
    };
    if key.is_empty() {
        return Err(KeyHeaderError::Empty);
    }
    if key.len() > MAX_KEY_CHARS {
        return Err(KeyHeaderError::TooLong);
    }
    Ok(key)
}

/// RFC 9651 §4.2.5: `"` then printable ASCII with `\"` / `\\` escapes, then
/// `"`, and nothing after it.
fn sf_string(value: &[u8]) -> Result<String, KeyHeaderError> {
    let mut out = String::new();
    let mut bytes = value.iter().copied().skip(1);
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(escaped @ (b'"' | b'\\')) => out.push(char::from(escaped)),
                _ => return Err(KeyHeaderError::Malformed),
            },
            b'"' => {
                return if bytes.next().is_none() {
                    Ok(out)
                } else {
                    Err(KeyHeaderError::Malformed)
                };
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => return Err(KeyHeaderError::Malformed),
        }
        if out.len() > MAX_KEY_CHARS {
            return Err(KeyHeaderError::TooLong);
        }
    }
    // No closing quote.
    Err(KeyHeaderError::Malformed)
}

/// RFC 9110 `tchar`, plus `:` and `/` (as in an sf-token).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn quoted_strings_and_bare_tokens_are_keys() {
        assert_eq!(
            parse(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        assert_eq!(
            parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        assert_eq!(
            parse(b"  \"with spaces inside\"\t").unwrap(),
            "with spaces inside"
        );
        assert_eq!(parse(br#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(parse(b"urn:key/1.2_3~x").unwrap(), "urn:key/1.2_3~x");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            &br#""unterminated"#[..],
            br#""bad \n escape""#,
            br#""x" trailing"#,
            br#""x";param=1"#,
            b"two words",
            b"semi;colon",
            b"comma,list",
            "\"caf\u{e9}\"".as_bytes(),
            b"\"tab\there\"",
        ] {
            assert_eq!(
                parse(bad),
                Err(KeyHeaderError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_and_too_long_keys_are_refused() {
        assert_eq!(parse(b""), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"   "), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"\"\""), Err(KeyHeaderError::Empty));
        let longest = "k".repeat(MAX_KEY_CHARS);
        assert_eq!(parse(longest.as_bytes()).unwrap(), longest);
        assert_eq!(parse(format!("\"{longest}\"").as_bytes()).unwrap(), longest);
        let over = "k".repeat(MAX_KEY_CHARS + 1);
        assert_eq!(parse(over.as_bytes()), Err(KeyHeaderError::TooLong));
        assert_eq!(
            parse(format!("\"{over}\"").as_bytes()),
            Err(KeyHeaderError::TooLong)
        );
    }

    #[test]
    fn the_header_is_optional_but_single() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers), Ok(None));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("\"k1\""));
        assert_eq!(idempotency_key(&headers), Ok(Some("k1".to_owned())));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("\"k2\""));
        assert_eq!(idempotency_key(&headers), Err(KeyHeaderError::Repeated));
    }
}
