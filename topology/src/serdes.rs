//! Serdes: how keys and values become bytes and back.
//!
//! A [`Serde<T>`] turns a `T` into the bytes of a Kafka record's key or value
//! and back. Kafka keys and values may be absent (null); a serde says what
//! that means: [`Json`], [`Bincode`] and [`Utf8`] reject null, and
//! [`Nullable`] wraps any of them into a serde for `Option<T>` where null is
//! `None`. So the type of a stream says whether its keys can be null, and a
//! null where the type has none is a clear deserialization error (which the
//! runtime sends to the dead-letter handling) instead of a surprise.
//!
//! ```
//! use brook_topology::serdes::{Json, Nullable, Serde};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
//! struct Order { id: u64, total_cents: i64 }
//!
//! let serde = Json::<Order>::new();
//! let bytes = serde.serialize(&Order { id: 7, total_cents: 1999 }).unwrap();
//! assert_eq!(serde.deserialize(bytes.as_deref()).unwrap().id, 7);
//! assert!(serde.deserialize(None).is_err());
//!
//! let nullable = Nullable(Json::<Order>::new());
//! assert_eq!(nullable.deserialize(None).unwrap(), None);
//! assert_eq!(nullable.serialize(&None).unwrap(), None);
//! ```

use std::fmt;
use std::marker::PhantomData;

/// Why a key or value could not be (de)serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerdeError {
    /// The record had no key or value, and the type has no null.
    #[error("unexpected null (the {type_name} serde has no null; use Nullable for Option<T>)")]
    UnexpectedNull {
        /// The type that was expected.
        type_name: &'static str,
    },
    /// The bytes are not a valid encoding of the type.
    #[error("invalid {format} for {type_name}: {reason}")]
    Invalid {
        /// The encoding (JSON, bincode, UTF-8, ...).
        format: &'static str,
        /// The type that was expected.
        type_name: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// Something the serde needs cannot be reached now (a schema registry
    /// that does not answer): not the record's fault, so the runtime does
    /// not treat the record as bad; the task stops without committing past
    /// it and reads it again when it is retried.
    #[error("{what} is unavailable: {reason}")]
    Unavailable {
        /// What could not be reached.
        what: String,
        /// Why.
        reason: String,
    },
    /// The value could not be encoded.
    #[error("cannot encode {type_name} as {format}: {reason}")]
    Encode {
        /// The encoding.
        format: &'static str,
        /// The type.
        type_name: &'static str,
        /// What the encoder said.
        reason: String,
    },
}

/// Converts `T` to and from the bytes of a record key or value.
///
/// `None` bytes are a null key or value.
pub trait Serde<T>: Send + Sync + 'static {
    /// Encodes `value`; `Ok(None)` writes a null.
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError>;
    /// Decodes a key or value; `None` is a null.
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError>;
}

fn short_type_name<T>() -> &'static str {
    std::any::type_name::<T>()
}

/// JSON via `serde_json`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// A JSON serde for `T`.
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Json::new()
    }
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json<{}>", short_type_name::<T>())
    }
}

impl<T> Serde<T> for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        thread_local! {
            /// Where values are written first: each output then gets an
            /// allocation of its exact size (`to_vec` would start at 128
            /// bytes and grow by doubling).
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            serde_json::to_writer(&mut *scratch, value).map_err(|e| SerdeError::Encode {
                format: "JSON",
                type_name: short_type_name::<T>(),
                reason: e.to_string(),
            })?;
            let bytes = scratch.to_vec();
            // A rare huge value does not stay held by the thread.
            if scratch.capacity() > 1 << 20 {
                *scratch = Vec::new();
            }
            Ok(Some(bytes))
        })
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: short_type_name::<T>(),
        })?;
        serde_json::from_slice(bytes).map_err(|e| SerdeError::Invalid {
            format: "JSON",
            type_name: short_type_name::<T>(),
            reason: e.to_string(),
        })
    }
}

/// Compact binary encoding via `bincode` (standard configuration).
///
/// Decoding refuses a value whose length prefixes claim more than
/// [`BINCODE_DECODE_LIMIT`] bytes of memory: without a limit, a corrupt or
/// hostile length prefix made bincode allocate whatever it claimed (found
/// by fuzzing: a 22-byte input claiming a string of 2^64 bytes panicked
/// with "capacity overflow"; a smaller claim would abort on allocation).
pub struct Bincode<T>(PhantomData<fn() -> T>);

/// The most memory, in bytes, the length prefixes of one bincode-encoded
/// value may claim (64 MiB: far above Kafka's default record size limit
/// of 1 MiB).
pub const BINCODE_DECODE_LIMIT: usize = 64 << 20;

impl<T> Bincode<T> {
    /// A bincode serde for `T`.
    pub fn new() -> Self {
        Bincode(PhantomData)
    }
}

impl<T> Default for Bincode<T> {
    fn default() -> Self {
        Bincode::new()
    }
}

impl<T> Clone for Bincode<T> {
    fn clone(&self) -> Self {
        Bincode::new()
    }
}

impl<T> fmt::Debug for Bincode<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bincode<{}>", short_type_name::<T>())
    }
}

impl<T> Serde<T> for Bincode<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map(Some)
            .map_err(|e| SerdeError::Encode {
                format: "bincode",
                type_name: short_type_name::<T>(),
                reason: e.to_string(),
            })
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: short_type_name::<T>(),
        })?;
        let invalid = |reason: String| SerdeError::Invalid {
            format: "bincode",
            type_name: short_type_name::<T>(),
            reason,
        };
        let config = bincode::config::standard().with_limit::<BINCODE_DECODE_LIMIT>();
        let (value, read) =
            bincode::serde::decode_from_slice(bytes, config).map_err(|e| invalid(e.to_string()))?;
        if read != bytes.len() {
            return Err(invalid(format!("{} trailing bytes", bytes.len() - read)));
        }
        Ok(value)
    }
}

/// UTF-8 text as `String`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serde<String> for Utf8 {
    fn serialize(&self, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        let bytes = bytes.ok_or(SerdeError::UnexpectedNull {
            type_name: "String",
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|e| SerdeError::Invalid {
            format: "UTF-8",
            type_name: "String",
            reason: e.to_string(),
        })
    }
}

/// Raw bytes, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Serde<Vec<u8>> for RawBytes {
    fn serialize(&self, value: &Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.clone()))
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Vec<u8>, SerdeError> {
        bytes.map(<[u8]>::to_vec).ok_or(SerdeError::UnexpectedNull {
            type_name: "Vec<u8>",
        })
    }
}

/// `Option<T>` through the serde of `T`, with null as `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nullable<S>(pub S);

impl<T, S> Serde<Option<T>> for Nullable<S>
where
    S: Serde<T>,
{
    fn serialize(&self, value: &Option<T>) -> Result<Option<Vec<u8>>, SerdeError> {
        match value {
            Some(value) => self.0.serialize(value),
            None => Ok(None),
        }
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        bytes.map(|b| self.0.deserialize(Some(b))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Event {
        user: String,
        price: Option<f64>,
    }

    fn event() -> Event {
        Event {
            user: "u1".into(),
            price: Some(9.5),
        }
    }

    #[test]
    fn json_and_bincode_round_trip() {
        let json = Json::<Event>::new();
        let bytes = json.serialize(&event()).unwrap().unwrap();
        assert_eq!(bytes, br#"{"user":"u1","price":9.5}"#);
        assert_eq!(json.deserialize(Some(&bytes)).unwrap(), event());
        let bin = Bincode::<Event>::new();
        let bytes = bin.serialize(&event()).unwrap().unwrap();
        assert_eq!(bin.deserialize(Some(&bytes)).unwrap(), event());
    }

    #[test]
    fn json_numbers_survive_a_round_trip() {
        // Found by fuzzing: without correctly rounded parsing this moved by
        // one ulp per decode and encode.
        let json = Json::<serde_json::Value>::new();
        let text = b"522222222222222222222222225555555455555554555555455555555";
        let value = json.deserialize(Some(text)).unwrap();
        let bytes = json.serialize(&value).unwrap();
        assert_eq!(json.deserialize(bytes.as_deref()).unwrap(), value);
    }

    #[test]
    fn bincode_refuses_length_prefixes_claiming_more_than_its_limit() {
        let bin = Bincode::<(String, i64)>::new();
        // A string length of u64::MAX (varint marker 0xfd, then 8 bytes).
        let mut huge = vec![0xfd];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        let error = bin.deserialize(Some(&huge)).unwrap_err().to_string();
        assert!(error.contains("bincode"), "{error}");
        // Just over the limit, a claim that would otherwise be allocated.
        let mut over = vec![0xfd];
        over.extend_from_slice(&(BINCODE_DECODE_LIMIT as u64 + 1).to_le_bytes());
        assert!(bin.deserialize(Some(&over)).is_err());
        let big = (String::from_utf8(vec![b'x'; 1 << 20]).unwrap(), 7);
        let bytes = bin.serialize(&big).unwrap().unwrap();
        assert_eq!(bin.deserialize(Some(&bytes)).unwrap(), big);
    }

    #[test]
    fn bad_bytes_and_nulls_are_errors_that_say_what_was_expected() {
        let json = Json::<Event>::new();
        let err = json.deserialize(Some(b"{\"user\": 3}")).unwrap_err();
        assert!(
            matches!(err, SerdeError::Invalid { format: "JSON", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("Event"), "{err}");
        let err = json.deserialize(None).unwrap_err();
        assert!(err.to_string().contains("Nullable"), "{err}");
        let bin = Bincode::<Event>::new();
        let mut bytes = bin.serialize(&event()).unwrap().unwrap();
        bytes.push(0);
        assert!(
            bin.deserialize(Some(&bytes))
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
        assert!(bin.deserialize(Some(&[0xff])).is_err());
        assert!(Utf8.deserialize(Some(&[0xff, 0xfe])).is_err());
    }

    #[test]
    fn nullable_maps_null_to_none_and_back() {
        let s = Nullable(Utf8);
        assert_eq!(s.deserialize(None).unwrap(), None);
        assert_eq!(s.deserialize(Some(b"x")).unwrap(), Some("x".to_string()));
        assert_eq!(s.serialize(&None).unwrap(), None);
        assert_eq!(s.serialize(&Some("y".into())).unwrap(), Some(b"y".to_vec()));
        assert_eq!(RawBytes.deserialize(Some(b"\x00\x01")).unwrap(), vec![0, 1]);
    }
}
