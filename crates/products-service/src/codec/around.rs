//! Reading an object whose fields are a few of its own around a flattened
//! struct, as serde's `flatten` would (duplicates and missing fields refused,
//! unknown ones ignored) but streaming: `flatten` buffers the whole object
//! first, which costs about half as much again as reading it. Used on the
//! read paths: cached products (`ProductJson`) and stored ones
//! (`ProductDocument`).

use std::{borrow::Cow, fmt, marker::PhantomData};

use serde::{
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer,
};

/// The fields an object has besides its flattened struct, gathered as the
/// object is read.
pub trait OwnFields<'de>: Default {
    /// Reads the value of `key` if the key is one of ours; `false` if not.
    fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Reads `slot`'s value, refusing a second one.
pub fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<bool, A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(true)
}

/// Reads an object: the keys `O` takes into `O`, every other one into `T`.
pub fn deserialize_around<'de, D, T, O>(deserializer: D) -> Result<(T, O), D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
    O: OwnFields<'de>,
{
    deserializer.deserialize_map(AroundVisitor(PhantomData))
}

struct AroundVisitor<T, O>(PhantomData<(T, O)>);

impl<'de, T: Deserialize<'de>, O: OwnFields<'de>> Visitor<'de> for AroundVisitor<T, O> {
    type Value = (T, O);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(T, O), A::Error> {
        let mut own = O::default();
        let inner = T::deserialize(Aside {
            map,
            own: &mut own,
            _lifetime: PhantomData,
        })?;
        Ok((inner, own))
    }
}

/// The object's entries minus `O`'s (read into it on the way), as a
/// deserializer for `T`.
struct Aside<'o, 'de, A, O> {
    map: A,
    own: &'o mut O,
    _lifetime: PhantomData<&'de ()>,
}

impl<'de, A: MapAccess<'de>, O: OwnFields<'de>> MapAccess<'de> for Aside<'_, 'de, A, O> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(Key(key)) = self.map.next_key()? {
            if !self.own.read(&key, &mut self.map)? {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl<'de, A: MapAccess<'de>, O: OwnFields<'de>> Deserializer<'de> for Aside<'_, 'de, A, O> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// An object key, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
