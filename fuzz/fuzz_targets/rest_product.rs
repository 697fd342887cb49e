//! Fuzz target: a POST/PUT `/api/v1/products` body through the REST decoder
//! (`decode_product_input`) and the validation the use case applies
//! (`ProductDraft::parse`).
//!
//! Properties: nothing panics; an accepted body (202) becomes a command
//! whose Kafka payload the consumer decodes to the same command (create and
//! update), and a product the Redis cache can store and read back.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use products_core::{
    app::{ProductCommand, ProductUpdate},
    domain::{Product, ProductDraft, ProductId},
};
use products_service::codec::{
    decode_command, decode_product_input, encode_command, CommandKind, MessageOrigin, ProductJson,
};

fuzz_target!(|body: &[u8]| {
    let Ok(input) = decode_product_input(body) else {
        return;
    };
    let Ok(draft) = ProductDraft::parse(input) else {
        return;
    };

    let id = ProductId::from_bytes([7; 12]);
    let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let origin = MessageOrigin {
        timestamp: Some(now),
        partition: 0,
        offset: 0,
    };
    let product = Product::new(id.clone(), draft.clone(), now);
    let commands = [
        (CommandKind::Create, ProductCommand::Create(product.clone())),
        (
            CommandKind::Update,
            ProductCommand::Update(ProductUpdate {
                id,
                draft,
                updated_at: now,
            }),
        ),
    ];
    for (kind, command) in commands {
        let decoded = decode_command(kind, &encode_command(&command), origin)
            .expect("the consumer decodes what the REST edge accepted");
        assert_eq!(decoded, command, "the Kafka round trip changed the command");
    }

    let cached = serde_json::to_vec(&ProductJson::from(&product)).expect("encodes");
    let read_back: ProductJson = serde_json::from_slice(&cached).expect("cache entry decodes");
    assert_eq!(
        read_back.into_product().as_ref(),
        Ok(&product),
        "the cache round trip changed the product"
    );
});
