//! A model of Avro schemas for checking them and comparing versions.
//!
//! [`AvroSchema::parse`] reads a schema's JSON the way the Avro
//! specification defines it (primitive names, records, enums, arrays, maps,
//! unions, fixed, named references resolved through namespaces, logical
//! types over their underlying type) and rejects what the specification
//! forbids: unknown types, names used before they are defined or defined
//! twice, duplicate fields or symbols, unions directly inside unions or
//! with two branches of one type, and defaults that do not match their
//! field's type (a union's default matches its first branch).
//!
//! Named types live in an arena so that recursive types (a record with a
//! field of its own type) are plain indices. Logical types are kept only as
//! their underlying type: the specification's resolution rules, and so the
//! compatibility rules, ignore them.
//!
//! [`AvroSchema::canonical`] is the schema as compact JSON with its object
//! keys sorted: two texts of the same schema that differ only in whitespace
//! or key order get one canonical text, which the registry uses to give
//! them one id.

use std::collections::HashMap;

use serde_json::Value as Json;

/// A schema that could not be parsed, with the path to what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Avro schema at {path}: {reason}")]
pub struct SchemaError {
    /// Where in the schema (JSON-pointer-like: `/fields/3/type`).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// An Avro type; named types are indices into [`AvroSchema::named`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvroType {
    /// `null`
    Null,
    /// `boolean`
    Boolean,
    /// `int` (also under `date`, `time-millis`)
    Int,
    /// `long` (also under the timestamp logical types)
    Long,
    /// `float`
    Float,
    /// `double`
    Double,
    /// `bytes` (also under `decimal`)
    Bytes,
    /// `string` (also under `uuid`)
    String,
    /// `{"type": "array", "items": ...}`
    Array(Box<AvroType>),
    /// `{"type": "map", "values": ...}`
    Map(Box<AvroType>),
    /// `[a, b, ...]`
    Union(Vec<AvroType>),
    /// A record, enum or fixed, by index.
    Named(usize),
}

impl AvroType {
    /// The name the specification gives this type (full name for named
    /// types).
    pub fn describe(&self, schema: &AvroSchema) -> String {
        match self {
            AvroType::Null => "null".into(),
            AvroType::Boolean => "boolean".into(),
            AvroType::Int => "int".into(),
            AvroType::Long => "long".into(),
            AvroType::Float => "float".into(),
            AvroType::Double => "double".into(),
            AvroType::Bytes => "bytes".into(),
            AvroType::String => "string".into(),
            AvroType::Array(items) => format!("array<{}>", items.describe(schema)),
            AvroType::Map(values) => format!("map<{}>", values.describe(schema)),
            AvroType::Union(branches) => {
                let names: Vec<String> = branches.iter().map(|b| b.describe(schema)).collect();
                format!("union[{}]", names.join(", "))
            }
            AvroType::Named(i) => {
                let named = &schema.named[*i];
                format!("{} {}", named.kind.word(), named.full_name)
            }
        }
    }

    /// Which kind of type this is, for union branch matching: two
    /// branches of one union may not share a kind (named types are told
    /// apart by name).
    fn kind_key(&self, schema: &AvroSchema) -> String {
        match self {
            AvroType::Named(i) => schema.named[*i].full_name.clone(),
            AvroType::Array(_) => "array".into(),
            AvroType::Map(_) => "map".into(),
            other => other.describe(schema),
        }
    }
}

/// A record, enum or fixed type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedType {
    /// `namespace.name`.
    pub full_name: String,
    /// Alternative full names (for reading data written under an old name).
    pub aliases: Vec<String>,
    /// What the type is.
    pub kind: NamedKind,
}

/// The three kinds of named types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedKind {
    /// A record and its fields.
    Record(Vec<Field>),
    /// An enum: its symbols and, optionally, the symbol that readers use
    /// for symbols they do not know.
    Enum {
        /// The symbols, in order.
        symbols: Vec<String>,
        /// The enum's default symbol.
        default: Option<String>,
    },
    /// Fixed-size bytes.
    Fixed(usize),
}

impl NamedKind {
    fn word(&self) -> &'static str {
        match self {
            NamedKind::Record(_) => "record",
            NamedKind::Enum { .. } => "enum",
            NamedKind::Fixed(_) => "fixed",
        }
    }
}

/// A field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Other names the field had (a reader matches a writer's field by
    /// name or by one of these).
    pub aliases: Vec<String>,
    /// The field's type.
    pub ty: AvroType,
    /// The default a reader uses when the writer has no such field.
    pub default: Option<Json>,
}

/// A parsed Avro schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroSchema {
    /// The top-level type.
    pub root: AvroType,
    /// Every named type defined in the schema, in definition order.
    pub named: Vec<NamedType>,
    by_name: HashMap<String, usize>,
    canonical: String,
}

impl AvroSchema {
    /// Parses and checks a schema's JSON text.
    pub fn parse(text: &str) -> Result<AvroSchema, SchemaError> {
        let json: Json = serde_json::from_str(text).map_err(|e| SchemaError {
            path: "/".into(),
            reason: format!("not JSON: {e}"),
        })?;
        let mut parser = Parser {
            named: Vec::new(),
            by_name: HashMap::new(),
        };
        let root = parser.parse(&json, "", "")?;
        let canonical = canonical_json(&normalize(&json));
        Ok(AvroSchema {
            root,
            named: parser.named,
            by_name: parser.by_name,
            canonical,
        })
    }

    /// The schema as compact JSON with sorted keys, and primitive types
    /// written as plain strings (`{"type": "int"}` → `"int"`).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The named type called `full_name`, if the schema defines it.
    pub fn named_type(&self, full_name: &str) -> Option<&NamedType> {
        self.by_name.get(full_name).map(|&i| &self.named[i])
    }

    /// The full name of the top-level type, if it is named.
    pub fn name(&self) -> Option<&str> {
        match self.root {
            AvroType::Named(i) => Some(&self.named[i].full_name),
            _ => None,
        }
    }
}

/// A datum that is not a valid encoding of its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset} (in {path})")]
pub struct DatumError {
    /// Where in the bytes.
    pub offset: usize,
    /// Where in the schema.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl AvroSchema {
    /// Checks that `bytes` is exactly one datum of this schema: every
    /// length, union index and enum index in range, strings UTF-8, and no
    /// byte missing or left over. Decoders may be lenient with truncated
    /// data (apache-avro reads a union at the end of the input as null);
    /// this walk is not, and it allocates nothing unless it fails.
    pub fn check_datum(&self, bytes: &[u8]) -> Result<(), DatumError> {
        let mut walker = Walker {
            schema: self,
            bytes,
            pos: 0,
            path: Vec::new(),
        };
        walker.walk(&self.root)?;
        if walker.pos != bytes.len() {
            return Err(DatumError {
                offset: walker.pos,
                path: "/".into(),
                reason: format!(
                    "{} bytes left over after the datum",
                    bytes.len() - walker.pos
                ),
            });
        }
        Ok(())
    }
}

/// The most zero-byte items (nulls) one array or map block may claim.
const MAX_EMPTY_ITEMS: u64 = 1 << 24;

/// One step of the path to where a walk is.
#[derive(Clone, Copy)]
enum Step<'a> {
    Name(&'a str),
    Index(i64),
}

struct Walker<'a> {
    schema: &'a AvroSchema,
    bytes: &'a [u8],
    pos: usize,
    path: Vec<Step<'a>>,
}

impl<'a> Walker<'a> {
    fn fail(&self, reason: impl Into<String>) -> DatumError {
        let mut path = String::new();
        for step in &self.path {
            match step {
                Step::Name(n) => {
                    path.push('/');
                    path.push_str(n);
                }
                Step::Index(i) => {
                    path.push('/');
                    path.push_str(&i.to_string());
                }
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        DatumError {
            offset: self.pos,
            path,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DatumError> {
        if self.bytes.len() - self.pos < n {
            return Err(self.fail(format!(
                "the data ends early: {n} bytes needed, {} left",
                self.bytes.len() - self.pos
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn long(&mut self) -> Result<i64, DatumError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.fail("the data ends inside a number"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(self.fail("a number longer than 10 bytes"))
    }

    fn length(&mut self) -> Result<usize, DatumError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| self.fail(format!("negative length {n}")))
    }

    fn nested(&mut self, step: Step<'a>, ty: &'a AvroType) -> Result<(), DatumError> {
        self.path.push(step);
        self.walk(ty)?;
        self.path.pop();
        Ok(())
    }

    fn walk(&mut self, ty: &'a AvroType) -> Result<(), DatumError> {
        match ty {
            AvroType::Null => Ok(()),
            AvroType::Boolean => match self.take(1)?[0] {
                0 | 1 => Ok(()),
                b => {
                    self.pos -= 1;
                    Err(self.fail(format!("boolean byte {b}")))
                }
            },
            AvroType::Int => {
                let v = self.long()?;
                if i32::try_from(v).is_err() {
                    return Err(self.fail(format!("{v} does not fit an int")));
                }
                Ok(())
            }
            AvroType::Long => self.long().map(drop),
            AvroType::Float => self.take(4).map(drop),
            AvroType::Double => self.take(8).map(drop),
            AvroType::Bytes => {
                let n = self.length()?;
                self.take(n).map(drop)
            }
            AvroType::String => {
                let n = self.length()?;
                let start = self.pos;
                let text = self.take(n)?;
                if std::str::from_utf8(text).is_err() {
                    self.pos = start;
                    return Err(self.fail("a string that is not UTF-8"));
                }
                Ok(())
            }
            AvroType::Array(items) => self.blocks(|w| w.nested(Step::Name("items"), items)),
            AvroType::Map(values) => self.blocks(|w| {
                w.nested(Step::Name("keys"), &AvroType::String)?;
                w.nested(Step::Name("values"), values)
            }),
            AvroType::Union(branches) => {
                let index = self.long()?;
                let Some(branch) = usize::try_from(index).ok().and_then(|i| branches.get(i)) else {
                    return Err(self.fail(format!(
                        "union index {index} of {} branches",
                        branches.len()
                    )));
                };
                self.nested(Step::Index(index), branch)
            }
            AvroType::Named(i) => match &self.schema.named[*i].kind {
                NamedKind::Record(fields) => {
                    for field in fields {
                        self.nested(Step::Name(&field.name), &field.ty)?;
                    }
                    Ok(())
                }
                NamedKind::Enum { symbols, .. } => {
                    let index = self.long()?;
                    if index < 0 || index as usize >= symbols.len() {
                        return Err(
                            self.fail(format!("enum index {index} of {} symbols", symbols.len()))
                        );
                    }
                    Ok(())
                }
                NamedKind::Fixed(size) => self.take(*size).map(drop),
            },
        }
    }

    /// Array and map blocks: a count (negative: followed by a byte size),
    /// that many items, until a zero count.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DatumError>,
    ) -> Result<(), DatumError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.length()?;
            }
            let count = count.unsigned_abs();
            for n in 0..count {
                if self.pos >= self.bytes.len() {
                    return Err(self.fail("the data ends inside an array or map"));
                }
                let before = self.pos;
                item(self)?;
                // Items of no bytes (nulls) cannot be told from a forged
                // count; refuse absurd ones rather than loop for ever.
                if n == 0 && self.pos == before && count > MAX_EMPTY_ITEMS {
                    return Err(self.fail(format!("{count} items of zero bytes")));
                }
            }
        }
    }
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn primitive(name: &str) -> Option<AvroType> {
    Some(match name {
        "null" => AvroType::Null,
        "boolean" => AvroType::Boolean,
        "int" => AvroType::Int,
        "long" => AvroType::Long,
        "float" => AvroType::Float,
        "double" => AvroType::Double,
        "bytes" => AvroType::Bytes,
        "string" => AvroType::String,
        _ => return None,
    })
}

struct Parser {
    named: Vec<NamedType>,
    by_name: HashMap<String, usize>,
}

fn err(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `namespace.name` unless `name` is already qualified.
fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

impl Parser {
    fn parse(&mut self, json: &Json, namespace: &str, path: &str) -> Result<AvroType, SchemaError> {
        match json {
            Json::String(name) => self.reference(name, namespace, path),
            Json::Array(branches) => self.union(branches, namespace, path),
            Json::Object(object) => {
                let Some(ty) = object.get("type") else {
                    return Err(err(path, "an object schema needs a \"type\""));
                };
                let ty_name = match ty {
                    Json::String(s) => s.as_str(),
                    // {"type": {...}} or {"type": [...]}: the inner schema.
                    other => return self.parse(other, namespace, &format!("{path}/type")),
                };
                match ty_name {
                    "record" | "error" => self.record(object, namespace, path),
                    "enum" => self.enumeration(object, namespace, path),
                    "fixed" => self.fixed(object, namespace, path),
                    "array" => {
                        let items = object
                            .get("items")
                            .ok_or_else(|| err(path, "an array needs \"items\""))?;
                        Ok(AvroType::Array(Box::new(self.parse(
                            items,
                            namespace,
                            &format!("{path}/items"),
                        )?)))
                    }
                    "map" => {
                        let values = object
                            .get("values")
                            .ok_or_else(|| err(path, "a map needs \"values\""))?;
                        Ok(AvroType::Map(Box::new(self.parse(
                            values,
                            namespace,
                            &format!("{path}/values"),
                        )?)))
                    }
                    // A primitive (with attributes such as a logical type,
                    // which resolution ignores) or a reference.
                    other => self.reference(other, namespace, path),
                }
            }
            other => Err(err(
                path,
                format!("a schema is a string, an object or an array, not {other}"),
            )),
        }
    }

    fn reference(
        &mut self,
        name: &str,
        namespace: &str,
        path: &str,
    ) -> Result<AvroType, SchemaError> {
        if let Some(p) = primitive(name) {
            return Ok(p);
        }
        let candidates = [qualify(name, namespace), name.to_owned()];
        for candidate in &candidates {
            if let Some(&i) = self.by_name.get(candidate) {
                return Ok(AvroType::Named(i));
            }
        }
        Err(err(
            path,
            format!(
                "unknown type \"{name}\" (not a primitive, and no named type of that name is defined before it)"
            ),
        ))
    }

    fn union(
        &mut self,
        branches: &[Json],
        namespace: &str,
        path: &str,
    ) -> Result<AvroType, SchemaError> {
        if branches.is_empty() {
            return Err(err(path, "a union needs at least one branch"));
        }
        let mut out = Vec::with_capacity(branches.len());
        let mut kinds: Vec<String> = Vec::new();
        for (i, branch) in branches.iter().enumerate() {
            let bpath = format!("{path}/{i}");
            let ty = self.parse(branch, namespace, &bpath)?;
            if matches!(ty, AvroType::Union(_)) {
                return Err(err(&bpath, "a union may not directly contain a union"));
            }
            let key = ty.kind_key(&self.snapshot());
            if kinds.contains(&key) {
                return Err(err(
                    &bpath,
                    format!("the union has two branches of type {key}"),
                ));
            }
            kinds.push(key);
            out.push(ty);
        }
        Ok(AvroType::Union(out))
    }

    /// A view of the arena for describing types while parsing.
    fn snapshot(&self) -> AvroSchema {
        AvroSchema {
            root: AvroType::Null,
            named: self.named.clone(),
            by_name: HashMap::new(),
            canonical: String::new(),
        }
    }

    /// Reads `name`, `namespace` and `aliases`, and reserves the name.
    fn define(
        &mut self,
        object: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
        kind: NamedKind,
    ) -> Result<(usize, String), SchemaError> {
        let name = object
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| err(path, "a named type needs a string \"name\""))?;
        let own_namespace = match object.get("namespace") {
            None | Some(Json::Null) => None,
            Some(Json::String(ns)) => Some(ns.as_str()),
            Some(other) => {
                return Err(err(
                    path,
                    format!("\"namespace\" must be a string, not {other}"),
                ));
            }
        };
        let full_name = if name.contains('.') {
            name.to_owned()
        } else {
            qualify(name, own_namespace.unwrap_or(namespace))
        };
        for part in full_name.split('.') {
            if !valid_name(part) {
                return Err(err(
                    path,
                    format!(
                        "\"{full_name}\" is not a valid name ([A-Za-z_][A-Za-z0-9_]* parts separated by dots)"
                    ),
                ));
            }
        }
        if primitive(full_name.as_str()).is_some() {
            return Err(err(
                path,
                format!("\"{full_name}\" is a primitive type's name"),
            ));
        }
        if self.by_name.contains_key(&full_name) {
            return Err(err(
                path,
                format!("the type \"{full_name}\" is defined twice"),
            ));
        }
        let space = full_name.rsplit_once('.').map(|(ns, _)| ns).unwrap_or("");
        let aliases = string_list(object.get("aliases"), path, "aliases")?
            .into_iter()
            .map(|a| qualify(&a, space))
            .collect();
        let index = self.named.len();
        self.named.push(NamedType {
            full_name: full_name.clone(),
            aliases,
            kind,
        });
        self.by_name.insert(full_name.clone(), index);
        Ok((index, space.to_owned()))
    }

    fn record(
        &mut self,
        object: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<AvroType, SchemaError> {
        // Defined before its fields, so that fields may refer to it.
        let (index, space) = self.define(object, namespace, path, NamedKind::Record(Vec::new()))?;
        let fields_json = object
            .get("fields")
            .and_then(Json::as_array)
            .ok_or_else(|| err(path, "a record needs a \"fields\" array"))?;
        let mut fields: Vec<Field> = Vec::with_capacity(fields_json.len());
        for (i, field) in fields_json.iter().enumerate() {
            let fpath = format!("{path}/fields/{i}");
            let Json::Object(field) = field else {
                return Err(err(&fpath, "a field is an object"));
            };
            let name = field
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| err(&fpath, "a field needs a string \"name\""))?;
            if !valid_name(name) {
                return Err(err(&fpath, format!("\"{name}\" is not a valid field name")));
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(err(&fpath, format!("the field \"{name}\" appears twice")));
            }
            let ty_json = field
                .get("type")
                .ok_or_else(|| err(&fpath, format!("the field \"{name}\" needs a \"type\"")))?;
            let ty = self.parse(ty_json, &space, &format!("{fpath}/type"))?;
            let default = field.get("default").cloned();
            if let Some(default) = &default {
                check_default(&ty, default, &self.snapshot()).map_err(|reason| {
                    err(
                        &fpath,
                        format!("the default of field \"{name}\" ({default}) is invalid: {reason}"),
                    )
                })?;
            }
            fields.push(Field {
                name: name.to_owned(),
                aliases: string_list(field.get("aliases"), &fpath, "aliases")?,
                ty,
                default,
            });
        }
        self.named[index].kind = NamedKind::Record(fields);
        Ok(AvroType::Named(index))
    }

    fn enumeration(
        &mut self,
        object: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<AvroType, SchemaError> {
        let symbols = string_list(object.get("symbols"), path, "symbols")?;
        if object.get("symbols").is_none() {
            return Err(err(path, "an enum needs \"symbols\""));
        }
        for (i, symbol) in symbols.iter().enumerate() {
            if !valid_name(symbol) {
                return Err(err(
                    path,
                    format!("\"{symbol}\" is not a valid enum symbol"),
                ));
            }
            if symbols[..i].contains(symbol) {
                return Err(err(path, format!("the symbol \"{symbol}\" appears twice")));
            }
        }
        let default = match object.get("default") {
            None | Some(Json::Null) => None,
            Some(Json::String(d)) if symbols.contains(d) => Some(d.clone()),
            Some(other) => {
                return Err(err(
                    path,
                    format!("the enum default {other} is not one of its symbols"),
                ));
            }
        };
        let (index, _) = self.define(
            object,
            namespace,
            path,
            NamedKind::Enum { symbols, default },
        )?;
        Ok(AvroType::Named(index))
    }

    fn fixed(
        &mut self,
        object: &serde_json::Map<String, Json>,
        namespace: &str,
        path: &str,
    ) -> Result<AvroType, SchemaError> {
        let size = object
            .get("size")
            .and_then(Json::as_u64)
            .ok_or_else(|| err(path, "a fixed type needs a non-negative integer \"size\""))?;
        let (index, _) = self.define(object, namespace, path, NamedKind::Fixed(size as usize))?;
        Ok(AvroType::Named(index))
    }
}

fn string_list(json: Option<&Json>, path: &str, what: &str) -> Result<Vec<String>, SchemaError> {
    match json {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err(path, format!("\"{what}\" must hold strings, not {item}")))
            })
            .collect(),
        Some(other) => Err(err(
            path,
            format!("\"{what}\" must be an array, not {other}"),
        )),
    }
}

/// Whether `default` is a valid JSON encoding of a value of `ty`.
fn check_default(ty: &AvroType, default: &Json, schema: &AvroSchema) -> Result<(), String> {
    let ok = match ty {
        AvroType::Null => default.is_null(),
        AvroType::Boolean => default.is_boolean(),
        AvroType::Int => default.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
        AvroType::Long => default.as_i64().is_some(),
        AvroType::Float | AvroType::Double => default.is_number(),
        AvroType::Bytes | AvroType::String => default.is_string(),
        AvroType::Array(items) => match default.as_array() {
            Some(values) => {
                for v in values {
                    check_default(items, v, schema)?;
                }
                true
            }
            None => false,
        },
        AvroType::Map(values) => match default.as_object() {
            Some(map) => {
                for v in map.values() {
                    check_default(values, v, schema)?;
                }
                true
            }
            None => false,
        },
        // A union's default is a value of its first branch.
        AvroType::Union(branches) => {
            return check_default(&branches[0], default, schema).map_err(|e| {
                format!(
                    "a union's default must be a value of its first branch ({}): {e}",
                    branches[0].describe(schema)
                )
            });
        }
        AvroType::Named(i) => match &schema.named[*i].kind {
            NamedKind::Record(fields) => match default.as_object() {
                Some(object) => {
                    for field in fields {
                        match (object.get(&field.name), &field.default) {
                            (Some(v), _) => check_default(&field.ty, v, schema)?,
                            (None, Some(_)) => {}
                            (None, None) => {
                                return Err(format!("no value for field \"{}\"", field.name));
                            }
                        }
                    }
                    true
                }
                None => false,
            },
            NamedKind::Enum { symbols, .. } => default
                .as_str()
                .is_some_and(|s| symbols.iter().any(|x| x == s)),
            NamedKind::Fixed(_) => default.is_string(),
        },
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{default} is not a {}", ty.describe(schema)))
    }
}

/// Primitive types written as `{"type": "int"}` become `"int"`, recursively.
fn normalize(json: &Json) -> Json {
    match json {
        Json::Object(object) => {
            if object.len() == 1
                && let Some(Json::String(t)) = object.get("type")
                && PRIMITIVES.contains(&t.as_str())
            {
                return Json::String(t.clone());
            }
            Json::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.clone(), normalize(v)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with object keys sorted.
fn canonical_json(json: &Json) -> String {
    fn write(json: &Json, out: &mut String) {
        match json {
            Json::Object(object) => {
                let mut keys: Vec<&String> = object.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push(':');
                    write(&object[k], out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(json, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_enums_unions_and_references() {
        let s = AvroSchema::parse(
            r#"{"type":"record","name":"Order","namespace":"shop","fields":[
                {"name":"id","type":"string"},
                {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"],"default":"NEW"}},
                {"name":"previous","type":["null","Status"],"default":null},
                {"name":"next","type":["null","shop.Order"],"default":null},
                {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
        )
        .unwrap();
        assert_eq!(s.name(), Some("shop.Order"));
        assert!(s.named_type("shop.Status").is_some());
        let NamedKind::Record(fields) = &s.named_type("shop.Order").unwrap().kind else {
            panic!()
        };
        assert_eq!(fields[4].ty, AvroType::Long);
        assert_eq!(
            fields[3].ty,
            AvroType::Union(vec![AvroType::Null, AvroType::Named(0)])
        );
    }

    #[test]
    fn rejects_what_the_specification_forbids_and_says_where() {
        let cases = [
            (r#"{"type":"strin"}"#, "unknown type"),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"x","type":"int"}]}"#,
                "appears twice",
            ),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":"no"}]}"#,
                "/fields/0",
            ),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"x","type":["null","int"],"default":1}]}"#,
                "first branch",
            ),
            (r#"["int","int"]"#, "two branches"),
            (r#"["int",["null"]]"#, "directly contain a union"),
            (
                r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
                "appears twice",
            ),
            (
                r#"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#,
                "not one of its symbols",
            ),
            (r#"{"type":"record","name":"1A","fields":[]}"#, "valid name"),
            (r#"{"type":"fixed","name":"F"}"#, "size"),
            (
                r#"{"type":"record","name":"A","fields":[{"name":"b","type":"B"}]}"#,
                "unknown type \"B\"",
            ),
            (r#"not json"#, "not JSON"),
        ];
        for (text, expected) in cases {
            let e = AvroSchema::parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn canonical_text_ignores_whitespace_key_order_and_wrapped_primitives() {
        let a = AvroSchema::parse(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#,
        )
        .unwrap();
        let b = AvroSchema::parse(
            "{ \"fields\": [ {\"type\": {\"type\": \"int\"}, \"name\": \"x\"} ],\n \"name\": \"A\", \"type\": \"record\" }",
        )
        .unwrap();
        assert_eq!(a.canonical(), b.canonical());
        let c = AvroSchema::parse(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long"}]}"#,
        )
        .unwrap();
        assert_ne!(a.canonical(), c.canonical());
    }
}
