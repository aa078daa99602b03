//! Avro binary encoding of typed values, with schema resolution on read.
//!
//! [`encode`] writes a `Serialize` value as the Avro binary datum of a
//! schema (the bytes after Confluent's 5-byte header). [`decode`] reads a
//! datum written with the writer's schema and, when the reader's schema
//! differs, resolves it to the reader's schema as the Avro specification
//! says — fields the reader lacks are skipped, fields the writer lacks get
//! the reader's defaults, numbers are promoted — before building the typed
//! value. Before decoding, the bytes are walked against the writer's schema
//! ([`AvroSchema::check_datum`]): a datum with bytes left over, one that
//! ends early, or one with an out-of-range union or enum index is an error
//! naming the byte and the field, never a panic or a silently shortened
//! value.

use std::io::Cursor;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::avro::AvroSchema;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value does not fit the schema.
    #[error("cannot encode as Avro: {0}")]
    Encode(String),
    /// The bytes are not a datum of the writer's schema.
    #[error("corrupt Avro data: {0}")]
    Corrupt(String),
    /// The datum cannot be resolved to the reader's schema or type.
    #[error("cannot read the data with the reader's schema: {0}")]
    Resolve(String),
}

/// A schema parsed twice: by brook's checker ([`AvroSchema`], for
/// validation and compatibility) and by apache-avro (for encoding and
/// decoding).
#[derive(Debug, Clone)]
pub struct CodecSchema {
    /// brook's model.
    pub model: AvroSchema,
    /// apache-avro's.
    pub avro: Schema,
}

impl PartialEq for CodecSchema {
    fn eq(&self, other: &Self) -> bool {
        self.model.canonical() == other.model.canonical()
    }
}

impl CodecSchema {
    /// Parses and checks a schema's text.
    pub fn parse(text: &str) -> Result<CodecSchema, String> {
        let model = AvroSchema::parse(text).map_err(|e| e.to_string())?;
        let avro = Schema::parse_str(text).map_err(|e| error_chain(&e))?;
        Ok(CodecSchema { model, avro })
    }
}

/// Parses a schema (shorthand for [`CodecSchema::parse`]).
pub fn parse_schema(text: &str) -> Result<CodecSchema, String> {
    CodecSchema::parse(text)
}

/// Encodes `value` as an Avro datum of `schema`.
pub fn encode<T: Serialize>(schema: &CodecSchema, value: &T) -> Result<Vec<u8>, CodecError> {
    GenericDatumWriter::builder(&schema.avro)
        .build()
        .and_then(|w| w.write_ser_to_vec(value))
        .map_err(|e| CodecError::Encode(error_chain(&e)))
}

/// Decodes a datum written with `writer`, resolved to `reader` (or read as
/// written when `reader` is `None`).
pub fn decode_value(
    writer: &CodecSchema,
    reader: Option<&CodecSchema>,
    bytes: &[u8],
) -> Result<Value, CodecError> {
    writer
        .model
        .check_datum(bytes)
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    let mut cursor = Cursor::new(bytes);
    let raw = GenericDatumReader::builder(&writer.avro)
        .build()
        .and_then(|r| r.read_value(&mut cursor))
        .map_err(|e| CodecError::Corrupt(error_chain(&e)))?;
    match reader {
        Some(reader) if reader != writer => raw
            .resolve(&reader.avro)
            .map_err(|e| CodecError::Resolve(error_chain(&e))),
        _ => Ok(raw),
    }
}

/// Decodes a datum written with `writer` into a `T` whose schema is
/// `reader`.
pub fn decode<T: DeserializeOwned>(
    writer: &CodecSchema,
    reader: &CodecSchema,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let value = decode_value(writer, Some(reader), bytes)?;
    apache_avro::from_value::<T>(&value).map_err(|e| CodecError::Resolve(error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
