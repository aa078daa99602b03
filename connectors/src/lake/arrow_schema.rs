//! Arrow schemas from Avro schemas: how a record type becomes a lake table.
//!
//! | Avro | Arrow / Parquet |
//! | --- | --- |
//! | `boolean`, `int`, `long`, `float`, `double` | Boolean, Int32, Int64, Float32, Float64 |
//! | `string`, `uuid`, enum | Utf8 (enums by symbol) |
//! | `bytes` / `fixed(n)` | Binary / FixedSizeBinary(n) |
//! | `date`, `time-millis`, `time-micros` | Date32, Time32(ms), Time64(µs) |
//! | `timestamp-millis/micros/nanos` | Timestamp(ms/µs/ns, +00:00: adjusted to UTC) |
//! | `local-timestamp-*` | Timestamp without a time zone |
//! | `["null", T]` (either order) | T, nullable |
//! | record | Struct; array → List; map → Map(Utf8 → value) |
//!
//! Unions of several non-null types, decimals, durations and recursive
//! records have no faithful column type; they are refused with the field's
//! path, rather than written in a form readers would misread.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema};
use arrow::datatypes::{DataType, Field, Fields, Schema as ArrowSchema, TimeUnit};

/// A schema the lake cannot store, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map the Avro schema to Arrow at {path}: {reason}")]
pub struct MappingError {
    /// The field path (`/items/unit_price`).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// The Arrow schema of a lake table for the Avro record schema `schema`.
pub fn arrow_schema(schema: &Schema) -> Result<ArrowSchema, MappingError> {
    let Schema::Record(record) = schema else {
        return Err(MappingError {
            path: "/".into(),
            reason: "the top-level schema must be a record".into(),
        });
    };
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let mut mapper = Mapper {
        names,
        in_progress: Vec::new(),
    };
    let fields = mapper.fields(record, "")?;
    Ok(ArrowSchema::new(fields))
}

fn collect_names<'s>(schema: &'s Schema, names: &mut HashMap<Name, &'s Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_names(v, names);
            }
        }
        _ => {}
    }
}

struct Mapper<'s> {
    names: HashMap<Name, &'s Schema>,
    /// Records being mapped (a record inside itself is recursive).
    in_progress: Vec<Name>,
}

fn fail(path: &str, reason: impl Into<String>) -> MappingError {
    MappingError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

impl<'s> Mapper<'s> {
    fn fields(&mut self, record: &'s RecordSchema, path: &str) -> Result<Fields, MappingError> {
        if self.in_progress.contains(&record.name) {
            return Err(fail(
                path,
                format!(
                    "record {} contains itself (recursive records have no column type)",
                    record.name
                ),
            ));
        }
        self.in_progress.push(record.name.clone());
        let mut fields = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            let fpath = format!("{path}/{}", f.name);
            let (data_type, nullable) = self.field_type(&f.schema, &fpath)?;
            fields.push(Field::new(&f.name, data_type, nullable));
        }
        self.in_progress.pop();
        Ok(Fields::from(fields))
    }

    /// A column type and whether it is nullable.
    fn field_type(
        &mut self,
        schema: &'s Schema,
        path: &str,
    ) -> Result<(DataType, bool), MappingError> {
        if let Schema::Union(union) = schema {
            let non_null: Vec<&Schema> = union
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            let nullable = non_null.len() < union.variants().len();
            return match non_null[..] {
                [one] => Ok((self.data_type(one, path)?, nullable)),
                [] => Ok((DataType::Null, true)),
                _ => Err(fail(
                    path,
                    "a union of several non-null types has no column type (use [\"null\", T])",
                )),
            };
        }
        Ok((
            self.data_type(schema, path)?,
            matches!(schema, Schema::Null),
        ))
    }

    fn data_type(&mut self, schema: &'s Schema, path: &str) -> Result<DataType, MappingError> {
        // An offset rather than "UTC": arrow parses named zones only with chrono-tz;
        // Parquet stores either as "adjusted to UTC".
        let utc = || Some(Arc::from("+00:00"));
        Ok(match schema {
            Schema::Null => DataType::Null,
            Schema::Boolean => DataType::Boolean,
            Schema::Int => DataType::Int32,
            Schema::Long => DataType::Int64,
            Schema::Float => DataType::Float32,
            Schema::Double => DataType::Float64,
            Schema::Bytes => DataType::Binary,
            Schema::String | Schema::Enum(_) | Schema::Uuid(_) => DataType::Utf8,
            Schema::Fixed(f) => DataType::FixedSizeBinary(
                i32::try_from(f.size).map_err(|_| fail(path, "a fixed type too large"))?,
            ),
            Schema::Date => DataType::Date32,
            Schema::TimeMillis => DataType::Time32(TimeUnit::Millisecond),
            Schema::TimeMicros => DataType::Time64(TimeUnit::Microsecond),
            Schema::TimestampMillis => DataType::Timestamp(TimeUnit::Millisecond, utc()),
            Schema::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, utc()),
            Schema::TimestampNanos => DataType::Timestamp(TimeUnit::Nanosecond, utc()),
            Schema::LocalTimestampMillis => DataType::Timestamp(TimeUnit::Millisecond, None),
            Schema::LocalTimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, None),
            Schema::LocalTimestampNanos => DataType::Timestamp(TimeUnit::Nanosecond, None),
            Schema::Array(a) => {
                let (item, nullable) = self.field_type(&a.items, &format!("{path}/items"))?;
                DataType::List(Arc::new(Field::new("item", item, nullable)))
            }
            Schema::Map(m) => {
                let (value, nullable) = self.field_type(&m.types, &format!("{path}/values"))?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", value, nullable),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            Schema::Record(r) => DataType::Struct(self.fields(r, path)?),
            Schema::Union(_) => return Ok(self.field_type(schema, path)?.0),
            Schema::Ref { name } => {
                let target = *self
                    .names
                    .get(name)
                    .ok_or_else(|| fail(path, format!("unknown type {name}")))?;
                self.data_type(target, path)?
            }
            Schema::Decimal(_) | Schema::BigDecimal => {
                return Err(fail(path, "decimals are not stored in the lake yet"));
            }
            Schema::Duration(_) => {
                return Err(fail(path, "durations are not stored in the lake yet"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_schemas::events::Event;
    use brook_schemas::events::ecommerce::UserEventV2;
    use brook_schemas::events::eventmart::OrderEvent;

    fn parse(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    #[test]
    fn the_seed_and_eventmart_events_map_to_columns() {
        let s = arrow_schema(&parse(UserEventV2::SCHEMA)).unwrap();
        let f = |n: &str| s.field_with_name(n).unwrap().clone();
        assert_eq!(f("event_id").data_type(), &DataType::Utf8);
        assert!(!f("event_id").is_nullable());
        assert_eq!(f("event_type").data_type(), &DataType::Utf8);
        assert_eq!(f("timestamp").data_type(), &DataType::Int64);
        assert_eq!(f("price").data_type(), &DataType::Float64);
        assert!(f("price").is_nullable());
        assert_eq!(f("device_type").data_type(), &DataType::Utf8);
        let orders = arrow_schema(&parse(OrderEvent::SCHEMA)).unwrap();
        let ts = orders.field_with_name("timestamp").unwrap();
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("+00:00")))
        );
        let DataType::List(item) = orders.field_with_name("items").unwrap().data_type() else {
            panic!()
        };
        let DataType::Struct(fields) = item.data_type() else {
            panic!()
        };
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[3].data_type(), &DataType::Float64);
    }

    #[test]
    fn what_has_no_column_type_is_refused_with_its_path() {
        let cases = [
            (
                r#"{"type":"record","name":"A","fields":[{"name":"u","type":["int","string"]}]}"#,
                "/u",
            ),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"n","type":["null","A"]}]}"#,
                "/n",
            ),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}}]}"#,
                "/d",
            ),
            (r#""string""#, "/"),
        ];
        for (text, path) in cases {
            let e = arrow_schema(&parse(text)).unwrap_err();
            assert_eq!(e.path, path, "{text}: {e}");
        }
    }
}
