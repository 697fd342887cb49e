//! The domain: products and the validated value types they are made of.
//!
//! Parse, don't validate: every type here can only be built through a
//! constructor that checks its invariants, so a `Product` that exists is valid.

mod error;
mod fields;
mod ids;
mod product;
mod search;

pub use error::{FieldError, ValidationErrors};
pub use fields::{Description, HttpUrl, Price, ProductName, Quantity, Rating};
pub use ids::{CategoryId, ObjectIdHex, ProductId};
pub use product::{Product, ProductDraft, UnvalidatedProduct};
pub use search::{SearchPage, SearchQuery, SearchText};
