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

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Mutex, OnceLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
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
/// decoding), with apache-avro's writer and reader for it built once.
///
/// apache-avro's readers and writers borrow their schema, so the parsed
/// schema is interned for the life of the process: one copy per distinct
/// schema (by canonical text), however often it is parsed — as many as the
/// registry ids and reader types a process meets.
pub struct CodecSchema {
    /// brook's model.
    pub model: AvroSchema,
    avro: &'static Interned,
}

struct Interned {
    schema: &'static Schema,
    resolved: ResolvedSchema<'static>,
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
}

impl std::fmt::Debug for CodecSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecSchema")
            .field("name", &self.model.name())
            .field("canonical", &self.model.canonical())
            .finish()
    }
}

impl PartialEq for CodecSchema {
    fn eq(&self, other: &Self) -> bool {
        self.model.canonical() == other.model.canonical()
    }
}

fn interned() -> &'static Mutex<HashMap<String, &'static Interned>> {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static Interned>>> = OnceLock::new();
    INTERNED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl CodecSchema {
    /// Parses and checks a schema's text.
    pub fn parse(text: &str) -> Result<CodecSchema, String> {
        let model = AvroSchema::parse(text).map_err(|e| e.to_string())?;
        let mut table = interned().lock().unwrap_or_else(|p| p.into_inner());
        let avro = match table.get(model.canonical()) {
            Some(found) => *found,
            None => {
                let schema: &'static Schema = Box::leak(Box::new(
                    Schema::parse_str(text).map_err(|e| error_chain(&e))?,
                ));
                let resolved = ResolvedSchema::try_from(schema).map_err(|e| error_chain(&e))?;
                let writer = GenericDatumWriter::builder(schema)
                    .resolved_schemata(resolved.clone())
                    .build()
                    .map_err(|e| error_chain(&e))?;
                let reader = GenericDatumReader::builder(schema)
                    .resolved_writer_schemata(resolved.clone())
                    .build()
                    .map_err(|e| error_chain(&e))?;
                let entry: &'static Interned = Box::leak(Box::new(Interned {
                    schema,
                    resolved,
                    writer,
                    reader,
                }));
                table.insert(model.canonical().to_owned(), entry);
                entry
            }
        };
        Ok(CodecSchema { model, avro })
    }

    /// apache-avro's form of the schema.
    pub fn avro(&self) -> &Schema {
        self.avro.schema
    }
}

/// Parses a schema (shorthand for [`CodecSchema::parse`]).
pub fn parse_schema(text: &str) -> Result<CodecSchema, String> {
    CodecSchema::parse(text)
}

/// Encodes `value` as an Avro datum of `schema`.
pub fn encode<T: Serialize>(schema: &CodecSchema, value: &T) -> Result<Vec<u8>, CodecError> {
    schema
        .avro
        .writer
        .write_ser_to_vec(value)
        .map_err(|e| CodecError::Encode(error_chain(&e)))
}

fn check(writer: &CodecSchema, bytes: &[u8]) -> Result<(), CodecError> {
    writer
        .model
        .check_datum(bytes)
        .map_err(|e| CodecError::Corrupt(e.to_string()))
}

/// Decodes a datum written with `writer`, resolved to `reader` (or read as
/// written when `reader` is `None`).
pub fn decode_value(
    writer: &CodecSchema,
    reader: Option<&CodecSchema>,
    bytes: &[u8],
) -> Result<Value, CodecError> {
    match reader {
        Some(reader) if reader != writer => Resolver::new(writer, reader)?.decode_value(bytes),
        _ => {
            check(writer, bytes)?;
            writer
                .avro
                .reader
                .read_value(&mut Cursor::new(bytes))
                .map_err(|e| CodecError::Corrupt(error_chain(&e)))
        }
    }
}

/// Decodes a datum written with `writer` into a `T` whose schema is
/// `reader`.
pub fn decode<T: DeserializeOwned>(
    writer: &CodecSchema,
    reader: &CodecSchema,
    bytes: &[u8],
) -> Result<T, CodecError> {
    if writer == reader {
        check(writer, bytes)?;
        // The same schema: straight from the bytes into T. That path also
        // wants T's serde name to be the record's name; a type named
        // otherwise goes through apache-avro's Value instead (~1.7x slower).
        if let Ok(value) = writer.avro.reader.read_deser::<T>(&mut Cursor::new(bytes)) {
            return Ok(value);
        }
        let value = writer
            .avro
            .reader
            .read_value(&mut Cursor::new(bytes))
            .map_err(|e| CodecError::Corrupt(error_chain(&e)))?;
        apache_avro::from_value::<T>(&value).map_err(|e| CodecError::Resolve(error_chain(&e)))
    } else {
        Resolver::new(writer, reader)?.decode(bytes)
    }
}

/// Reads data of one writer schema as another (reader) schema; build it
/// once per writer and keep it.
pub struct Resolver {
    model: AvroSchema,
    reader: GenericDatumReader<'static>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("writer", &self.model.name())
            .finish()
    }
}

impl Resolver {
    /// A resolver from `writer` to `reader`.
    pub fn new(writer: &CodecSchema, reader: &CodecSchema) -> Result<Resolver, CodecError> {
        let resolving = GenericDatumReader::builder(writer.avro.schema)
            .resolved_writer_schemata(writer.avro.resolved.clone())
            .reader_schema(reader.avro.schema)
            .resolved_reader_schemata(reader.avro.resolved.clone())
            .build()
            .map_err(|e| CodecError::Resolve(error_chain(&e)))?;
        Ok(Resolver {
            model: writer.model.clone(),
            reader: resolving,
        })
    }

    /// Decodes a datum of the writer schema as the reader schema's value.
    pub fn decode_value(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        self.model
            .check_datum(bytes)
            .map_err(|e| CodecError::Corrupt(e.to_string()))?;
        self.reader
            .read_value(&mut Cursor::new(bytes))
            .map_err(|e| CodecError::Resolve(error_chain(&e)))
    }

    /// Decodes a datum of the writer schema into the reader's type.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let value = self.decode_value(bytes)?;
        apache_avro::from_value::<T>(&value).map_err(|e| CodecError::Resolve(error_chain(&e)))
    }
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
