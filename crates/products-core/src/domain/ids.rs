//! Identifiers: 24-character hexadecimal ObjectIds, as MongoDB makes them.
//!
//! The Go original leaked `ObjectID("…")` debug strings onto the wire; here an
//! id is only ever the bare lowercase hex form.

use std::{fmt, str::FromStr};

/// A 12-byte ObjectId in its canonical 24-hex-digit lowercase form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectIdHex(String);

impl ObjectIdHex {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.len() != 24 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("must be a 24-character hexadecimal ObjectId".to_owned());
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12 raw bytes (for drivers that store the binary form).
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // Cannot fail: `parse` admitted only hex digits.
            *byte = u8::from_str_radix(&self.0[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        bytes
    }

    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl fmt::Display for ObjectIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! object_id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ObjectIdHex);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, String> {
                ObjectIdHex::parse(raw).map(Self)
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
            pub fn to_bytes(&self) -> [u8; 12] {
                self.0.to_bytes()
            }
            pub fn from_bytes(bytes: [u8; 12]) -> Self {
                Self(ObjectIdHex::from_bytes(bytes))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

object_id_newtype!(
    /// Identity of a product.
    ProductId
);
object_id_newtype!(
    /// The category a product belongs to.
    CategoryId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_24_hex_and_normalises_case() {
        let id = ProductId::parse("65A1F0C2E4B0A1B2C3D4E5F6").unwrap();
        assert_eq!(id.as_str(), "65a1f0c2e4b0a1b2c3d4e5f6");
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        for bad in [
            "",
            "123",
            "65a1f0c2e4b0a1b2c3d4e5f",
            "65a1f0c2e4b0a1b2c3d4e5fz",
            "ObjectID(\"65a1f0c2e4b0a1b2c3d4e5f6\")",
            "é5a1f0c2e4b0a1b2c3d4e5f",
        ] {
            assert!(ProductId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bytes_round_trip() {
        let id = CategoryId::parse("000102030405060708090a0b").unwrap();
        assert_eq!(id.to_bytes(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(CategoryId::from_bytes(id.to_bytes()), id);
    }
}
