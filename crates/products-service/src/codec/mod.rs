//! Wire formats shared by several edges: the public Product JSON (REST bodies,
//! Redis cache entries) and the Kafka command payloads built on it, with
//! decoders that report every bad field. The client's fields are written
//! once, in [`DraftJson`]. `around` reads a flattened struct without
//! buffering (also used by the MongoDB document).

pub(crate) mod around;
mod command_json;
mod draft_json;
mod fields;
mod product_json;

pub use command_json::{decode_command, encode_command, CommandKind, MessageOrigin};
pub use draft_json::DraftJson;
pub use product_json::{decode_product_input, DecodeError, ProductJson};
