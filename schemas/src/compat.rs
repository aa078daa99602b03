//! Schema compatibility: can data written with one schema be read with
//! another, and which versions must a new schema be checked against.
//!
//! [`can_read`] applies the Avro specification's schema-resolution rules
//! to a reader and a writer schema and lists every place where resolution
//! would fail:
//!
//! - primitives match themselves, and the writer's type may be promoted:
//!   `int` → `long`, `float`, `double`; `long` → `float`, `double`;
//!   `float` → `double`; `string` ↔ `bytes`;
//! - records, enums and fixed match when their names match (the
//!   unqualified name, or the writer's name is one of the reader's
//!   aliases); fixed sizes must be equal;
//! - a reader's record field is matched with the writer's field of the same
//!   name or of one of the reader field's aliases, and its type must read
//!   the writer field's type; a reader field that the writer lacks needs a
//!   default; writer fields the reader lacks are skipped;
//! - an enum reader needs every writer symbol, unless it has a default
//!   symbol for the ones it does not know;
//! - arrays and maps compare their item and value types;
//! - a writer union is readable when every branch is; a reader union reads
//!   a non-union writer when one of its branches does.
//!
//! [`CompatibilityLevel`] says which checks a new version must pass, as
//! Confluent's Schema Registry defines the levels: `BACKWARD` (the new
//! schema reads data of the latest version), `FORWARD` (the latest version
//! reads data of the new one), `FULL` (both), their `_TRANSITIVE` forms
//! (against every earlier version, not only the latest) and `NONE`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use crate::avro::{AvroSchema, AvroType, NamedKind, NamedType};

/// How new versions of a subject must relate to the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest version
    /// (consumers upgrade first). Confluent's default.
    #[default]
    Backward,
    /// ... with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema
    /// (producers upgrade first).
    Forward,
    /// ... every earlier version can.
    ForwardTransitive,
    /// Both backward and forward with the latest version.
    Full,
    /// Both, with every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Every level, in the order Confluent lists them.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The level's name in the registry's API (`BACKWARD_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a compatibility level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "\"{0}\" is not a compatibility level (NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE)"
)]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// What kind of resolution failure was found (the names Avro's Java
/// `SchemaCompatibility` and Confluent use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncompatibilityKind {
    /// Different types that no promotion bridges.
    TypeMismatch,
    /// Named types whose names (and aliases) do not match.
    NameMismatch,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
    /// Writer enum symbols the reader lacks, without a reader default.
    MissingEnumSymbols,
    /// A reader field the writer lacks, without a default.
    ReaderFieldMissingDefaultValue,
    /// A writer union branch no reader type can read.
    MissingUnionBranch,
}

impl IncompatibilityKind {
    /// The name in messages (`READER_FIELD_MISSING_DEFAULT_VALUE`).
    pub fn as_str(self) -> &'static str {
        match self {
            IncompatibilityKind::TypeMismatch => "TYPE_MISMATCH",
            IncompatibilityKind::NameMismatch => "NAME_MISMATCH",
            IncompatibilityKind::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
            IncompatibilityKind::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            IncompatibilityKind::ReaderFieldMissingDefaultValue => {
                "READER_FIELD_MISSING_DEFAULT_VALUE"
            }
            IncompatibilityKind::MissingUnionBranch => "MISSING_UNION_BRANCH",
        }
    }
}

/// One place where a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// What failed.
    pub kind: IncompatibilityKind,
    /// Where, in the reader schema (`/fields/product_id/type`).
    pub path: String,
    /// A sentence for people.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.kind.as_str(),
            self.path,
            self.message
        )
    }
}

/// Every reason why data written with `writer` cannot be read with
/// `reader`; empty when it can.
pub fn can_read(reader: &AvroSchema, writer: &AvroSchema) -> Vec<Incompatibility> {
    let mut checker = Checker {
        reader,
        writer,
        in_progress: HashSet::new(),
        found: Vec::new(),
    };
    checker.check(&reader.root, &writer.root, "");
    checker.found
}

/// A problem of a new schema with one earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionIncompatibility {
    /// The earlier version (as numbered by the caller).
    pub version: u32,
    /// `BACKWARD` (the new schema cannot read the old one's data) or
    /// `FORWARD` (the old cannot read the new's).
    pub direction: &'static str,
    /// The failure.
    pub problem: Incompatibility,
}

impl fmt::Display for VersionIncompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.direction == "BACKWARD" {
            write!(
                f,
                "the new schema cannot read data written with version {}: {}",
                self.version, self.problem
            )
        } else {
            write!(
                f,
                "version {} cannot read data written with the new schema: {}",
                self.version, self.problem
            )
        }
    }
}

/// Checks `new` against the earlier versions of a subject (`(version,
/// schema)`, oldest first) as `level` requires: the latest one only, or
/// all of them for the transitive levels.
pub fn check_versions(
    level: CompatibilityLevel,
    new: &AvroSchema,
    earlier: &[(u32, &AvroSchema)],
) -> Vec<VersionIncompatibility> {
    let against: &[(u32, &AvroSchema)] = if level.transitive() {
        earlier
    } else {
        match earlier.last() {
            Some(_) => &earlier[earlier.len() - 1..],
            None => &[],
        }
    };
    let mut out = Vec::new();
    for &(version, old) in against.iter().rev() {
        if level.backward() {
            out.extend(
                can_read(new, old)
                    .into_iter()
                    .map(|problem| VersionIncompatibility {
                        version,
                        direction: "BACKWARD",
                        problem,
                    }),
            );
        }
        if level.forward() {
            out.extend(
                can_read(old, new)
                    .into_iter()
                    .map(|problem| VersionIncompatibility {
                        version,
                        direction: "FORWARD",
                        problem,
                    }),
            );
        }
    }
    out
}

struct Checker<'a> {
    reader: &'a AvroSchema,
    writer: &'a AvroSchema,
    /// Named pairs being compared: a recursive type compared with itself
    /// is assumed compatible at the inner occurrence.
    in_progress: HashSet<(usize, usize)>,
    found: Vec<Incompatibility>,
}

fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The specification: "both schemas are records with the same
/// (unqualified) name"; aliases of the reader also match.
fn names_match(reader: &NamedType, writer: &NamedType) -> bool {
    unqualified(&reader.full_name) == unqualified(&writer.full_name)
        || reader
            .aliases
            .iter()
            .any(|a| a == &writer.full_name || unqualified(a) == unqualified(&writer.full_name))
}

fn promotes(reader: &AvroType, writer: &AvroType) -> bool {
    use AvroType::*;
    matches!(
        (writer, reader),
        (Int, Long | Float | Double)
            | (Long, Float | Double)
            | (Float, Double)
            | (String, Bytes)
            | (Bytes, String)
    )
}

impl Checker<'_> {
    fn report(&mut self, kind: IncompatibilityKind, path: &str, message: String) {
        self.found.push(Incompatibility {
            kind,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_owned()
            },
            message,
        });
    }

    /// Whether `reader` reads `writer` without recording anything.
    fn quietly_reads(&mut self, reader: &AvroType, writer: &AvroType) -> bool {
        let before = self.found.len();
        let in_progress = self.in_progress.clone();
        self.check(reader, writer, "");
        let ok = self.found.len() == before;
        self.found.truncate(before);
        self.in_progress = in_progress;
        ok
    }

    fn check(&mut self, reader: &AvroType, writer: &AvroType, path: &str) {
        use AvroType::*;
        match (reader, writer) {
            // Every branch the writer may have written must be readable.
            (_, Union(branches)) => {
                for (i, branch) in branches.iter().enumerate() {
                    let readable = match reader {
                        Union(_) => self.quietly_reads(reader, branch),
                        _ => {
                            let before = self.found.len();
                            self.check(reader, branch, path);
                            self.found.len() == before
                        }
                    };
                    if !readable && matches!(reader, Union(_)) {
                        let message = format!(
                            "the writer's union branch {i} ({}) is not readable by any branch of the reader's {}",
                            branch.describe(self.writer),
                            reader.describe(self.reader)
                        );
                        self.report(IncompatibilityKind::MissingUnionBranch, path, message);
                    }
                }
            }
            (Union(branches), _) => {
                if !branches.iter().any(|b| self.quietly_reads(b, writer)) {
                    let message = format!(
                        "the writer's {} is not readable by any branch of the reader's {}",
                        writer.describe(self.writer),
                        reader.describe(self.reader)
                    );
                    self.report(IncompatibilityKind::MissingUnionBranch, path, message);
                }
            }
            (Array(r), Array(w)) => self.check(r, w, &format!("{path}/items")),
            (Map(r), Map(w)) => self.check(r, w, &format!("{path}/values")),
            (Named(r), Named(w)) => self.named(*r, *w, path),
            (r, w) if r == w || promotes(r, w) => {}
            (r, w) => {
                let message = format!(
                    "the reader's type {} cannot read the writer's {}",
                    r.describe(self.reader),
                    w.describe(self.writer)
                );
                self.report(IncompatibilityKind::TypeMismatch, path, message);
            }
        }
    }

    fn named(&mut self, r: usize, w: usize, path: &str) {
        if !self.in_progress.insert((r, w)) {
            return;
        }
        let (reader, writer) = (&self.reader.named[r], &self.writer.named[w]);
        if !names_match(reader, writer) {
            let message = format!(
                "the reader's {} {} does not match the writer's {} {} (names and aliases differ)",
                reader.kind_word(),
                reader.full_name,
                writer.kind_word(),
                writer.full_name
            );
            self.report(
                IncompatibilityKind::NameMismatch,
                &format!("{path}/name"),
                message,
            );
            return;
        }
        match (&reader.kind, &writer.kind) {
            (NamedKind::Record(rfields), NamedKind::Record(wfields)) => {
                for rf in rfields {
                    let wf = wfields
                        .iter()
                        .find(|wf| wf.name == rf.name || rf.aliases.iter().any(|a| a == &wf.name));
                    let fpath = format!("{path}/fields/{}", rf.name);
                    match wf {
                        Some(wf) => self.check(&rf.ty, &wf.ty, &format!("{fpath}/type")),
                        None if rf.default.is_some() => {}
                        None => {
                            let message = format!(
                                "the reader's field \"{}\" of {} has no default, and the writer has no such field",
                                rf.name, reader.full_name
                            );
                            self.report(
                                IncompatibilityKind::ReaderFieldMissingDefaultValue,
                                &fpath,
                                message,
                            );
                        }
                    }
                }
            }
            (
                NamedKind::Enum {
                    symbols: rsymbols,
                    default,
                },
                NamedKind::Enum {
                    symbols: wsymbols, ..
                },
            ) => {
                let missing: Vec<&String> =
                    wsymbols.iter().filter(|s| !rsymbols.contains(s)).collect();
                if !missing.is_empty() && default.is_none() {
                    let message = format!(
                        "the reader's enum {} lacks the writer's symbols {:?} and has no default symbol",
                        reader.full_name, missing
                    );
                    self.report(
                        IncompatibilityKind::MissingEnumSymbols,
                        &format!("{path}/symbols"),
                        message,
                    );
                }
            }
            (NamedKind::Fixed(rsize), NamedKind::Fixed(wsize)) => {
                if rsize != wsize {
                    let message = format!(
                        "the reader's fixed {} has size {rsize}, the writer's {wsize}",
                        reader.full_name
                    );
                    self.report(
                        IncompatibilityKind::FixedSizeMismatch,
                        &format!("{path}/size"),
                        message,
                    );
                }
            }
            _ => {
                let message = format!(
                    "the reader's {} {} cannot read the writer's {} {}",
                    reader.kind_word(),
                    reader.full_name,
                    writer.kind_word(),
                    writer.full_name
                );
                self.report(IncompatibilityKind::TypeMismatch, path, message);
            }
        }
    }
}

impl NamedType {
    fn kind_word(&self) -> &'static str {
        match self.kind {
            NamedKind::Record(_) => "record",
            NamedKind::Enum { .. } => "enum",
            NamedKind::Fixed(_) => "fixed",
        }
    }
}
