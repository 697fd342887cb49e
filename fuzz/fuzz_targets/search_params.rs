//! Fuzz target: the query string of `GET /api/v1/products/search` through
//! the handler's own steps — axum's query decoding (`QueryParams::from_uri`)
//! and `search_query` (products-core `SearchQuery::parse_params`).
//!
//! Properties: nothing panics; a valid query is within the contract (page
//! from 1, size 1..=100, text at most 250 characters, offset computable);
//! anything else (bad values, a malformed query string) is a 400.
#![no_main]

use axum::{
    http::{StatusCode, Uri},
    response::IntoResponse,
};
use libfuzzer_sys::fuzz_target;
use products_core::domain::{SearchQuery, SearchText};
use products_service::api::http::{search_query, QueryParams};

fuzz_target!(|query: &[u8]| {
    let mut raw = b"/api/v1/products/search?".to_vec();
    raw.extend_from_slice(query);
    // What hyper would reject before routing never reaches the handler.
    let Ok(uri) = Uri::try_from(raw) else {
        return;
    };
    let result = QueryParams::from_uri(&uri).and_then(|params| search_query(&params.0));
    match result {
        Ok(q) => {
            assert!(q.page >= 1);
            assert!((1..=SearchQuery::MAX_SIZE).contains(&q.size));
            assert!(q.text.as_str().chars().count() <= SearchText::MAX_CHARS);
            assert_eq!(q.text.as_str(), q.text.as_str().trim());
            let _ = q.offset();
        }
        Err(err) => {
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST);
        }
    }
});
