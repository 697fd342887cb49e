//! The product aggregate, and the decoder that turns raw input from any
//! protocol (JSON, protobuf, Kafka payload) into a valid draft of one.

use chrono::{DateTime, Utc};

use super::{
    error::Collector, CategoryId, Description, HttpUrl, Price, ProductId, ProductName, Quantity,
    Rating, ValidationErrors,
};

/// Product fields as a client sent them, before validation. Each decoder
/// (REST JSON, gRPC, Kafka) maps its wire type to this, so the rules live once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnvalidatedProduct {
    pub category_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price: Option<f64>,
    pub image_url: Option<String>,
    pub photos: Vec<String>,
    pub quantity: Option<i64>,
    pub rating: Option<i64>,
}

/// The client-controlled part of a product, valid by construction: what
/// create and update take.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductDraft {
    pub category_id: CategoryId,
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub image_url: Option<HttpUrl>,
    pub photos: Vec<HttpUrl>,
    pub quantity: Quantity,
    pub rating: Rating,
}

impl ProductDraft {
    /// At most this many photo URLs per product.
    pub const MAX_PHOTOS: usize = 50;

    /// Checks every field and reports all bad ones at once.
    pub fn parse(raw: UnvalidatedProduct) -> Result<Self, ValidationErrors> {
        let mut errors = Collector::default();
        let required = |v: Option<String>| v.ok_or_else(|| "is required".to_owned());

        let category_id = errors.check(
            "categoryId",
            required(raw.category_id).and_then(|s| CategoryId::parse(&s)),
        );
        let name = errors.check(
            "name",
            required(raw.name).and_then(|s| ProductName::parse(&s)),
        );
        let description = errors.check(
            "description",
            required(raw.description).and_then(|s| Description::parse(&s)),
        );
        let price = errors.check(
            "price",
            raw.price
                .ok_or_else(|| "is required".to_owned())
                .and_then(Price::parse),
        );
        let quantity = errors.check(
            "quantity",
            raw.quantity
                .ok_or_else(|| "is required".to_owned())
                .and_then(Quantity::parse),
        );
        let rating = errors.check("rating", Rating::parse(raw.rating.unwrap_or(0)));
        // An empty image URL means "none" (proto3 cannot tell absent from empty).
        let image_url = match raw.image_url.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(url) => errors.check("imageUrl", HttpUrl::parse(url)).map(Some),
        };
        let mut photos = Vec::with_capacity(raw.photos.len());
        if raw.photos.len() > Self::MAX_PHOTOS {
            errors.push(
                "photos",
                format!("must hold at most {} URLs", Self::MAX_PHOTOS),
            );
        } else {
            for (i, photo) in raw.photos.iter().enumerate() {
                // The field's name is formatted only for an error (this runs on
                // every cached read too).
                match HttpUrl::parse(photo) {
                    Ok(url) => photos.push(url),
                    Err(message) => errors.push(format!("photos[{i}]"), message),
                }
            }
        }
        errors.finish()?;

        // Every `None` above recorded an error, so after `finish` all are `Some`.
        match (
            category_id,
            name,
            description,
            price,
            quantity,
            rating,
            image_url,
        ) {
            (
                Some(category_id),
                Some(name),
                Some(description),
                Some(price),
                Some(quantity),
                Some(rating),
                Some(image_url),
            ) => Ok(Self {
                category_id,
                name,
                description,
                price,
                image_url,
                photos,
                quantity,
                rating,
            }),
            _ => Err(ValidationErrors::single("product", "is invalid")),
        }
    }
}

/// A product in the catalog: its id, the client-controlled fields (the
/// draft it was created or last updated with) and the service's timestamps.
/// A field a client sets is added to [`ProductDraft`] only.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: ProductId,
    pub draft: ProductDraft,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Product {
    /// A new product made of a draft, created (and last updated) at `now`.
    pub fn new(id: ProductId, draft: ProductDraft, now: DateTime<Utc>) -> Self {
        Self {
            id,
            draft,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn valid_raw() -> UnvalidatedProduct {
        UnvalidatedProduct {
            category_id: Some("65a1f0c2e4b0a1b2c3d4e5f6".into()),
            name: Some("Coffee mug".into()),
            description: Some("A mug for coffee".into()),
            price: Some(9.5),
            image_url: Some("https://img.example.com/mug.png".into()),
            photos: vec!["https://img.example.com/mug-1.png".into()],
            quantity: Some(3),
            rating: Some(7),
        }
    }

    #[test]
    fn parses_a_valid_product() {
        let draft = ProductDraft::parse(valid_raw()).unwrap();
        assert_eq!(draft.name.as_str(), "Coffee mug");
        assert_eq!(draft.photos.len(), 1);
    }

    #[test]
    fn reports_every_bad_field() {
        let raw = UnvalidatedProduct {
            category_id: Some("nope".into()),
            name: Some("x".into()),
            description: None,
            price: Some(-1.0),
            image_url: Some("ftp://x".into()),
            photos: vec!["ok?".into(), "https://fine.example.com/".into()],
            quantity: None,
            rating: Some(11),
        };
        let errors = ProductDraft::parse(raw).unwrap_err();
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "categoryId",
                "name",
                "description",
                "price",
                "quantity",
                "rating",
                "imageUrl",
                "photos[0]"
            ]
        );
    }

    #[test]
    fn empty_image_url_means_none_and_rating_defaults_to_zero() {
        let raw = UnvalidatedProduct {
            image_url: Some(String::new()),
            rating: None,
            ..valid_raw()
        };
        let draft = ProductDraft::parse(raw).unwrap();
        assert_eq!(draft.image_url, None);
        assert_eq!(draft.rating.value(), 0);
    }

    #[test]
    fn too_many_photos_is_one_error() {
        let raw = UnvalidatedProduct {
            photos: vec!["https://a.example.com/".into(); ProductDraft::MAX_PHOTOS + 1],
            ..valid_raw()
        };
        let errors = ProductDraft::parse(raw).unwrap_err();
        assert_eq!(errors.fields().len(), 1);
        assert_eq!(errors.fields()[0].field, "photos");
    }
}
