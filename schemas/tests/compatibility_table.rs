//! A table of schema changes and the verdict each compatibility level must
//! give: `backward` is "the new schema reads data written with the old",
//! `forward` is "the old schema reads data written with the new". `FULL` is
//! both; a two-version history gives the transitive levels the same answer,
//! and the histories at the end tell them apart.

use brook_schemas::avro::AvroSchema;
use brook_schemas::compat::{CompatibilityLevel, check_versions};

/// A record `t.E` with these fields.
fn rec(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"E","namespace":"t","fields":[{fields}]}}"#)
}

struct Case {
    name: &'static str,
    old: String,
    new: String,
    backward: bool,
    forward: bool,
}

fn case(name: &'static str, old: String, new: String, backward: bool, forward: bool) -> Case {
    Case {
        name,
        old,
        new,
        backward,
        forward,
    }
}

const A: &str = r#"{"name":"a","type":"string"}"#;

fn enum_field(symbols: &str, default: Option<&str>) -> String {
    let default = default
        .map(|d| format!(r#","default":"{d}""#))
        .unwrap_or_default();
    format!(
        r#"{A},{{"name":"s","type":{{"type":"enum","name":"S","symbols":[{symbols}]{default}}}}}"#
    )
}

fn cases() -> Vec<Case> {
    let seed_v1 = include_str!("../subjects/ecommerce-events-value/v1.avsc").to_owned();
    let seed_v2 = include_str!("../subjects/ecommerce-events-value/v2.avsc").to_owned();
    let f = |ty: &str| format!(r#"{A},{{"name":"x","type":{ty}}}"#);
    let nested = |fields: &str| {
        format!(
            r#"{A},{{"name":"inner","type":{{"type":"record","name":"In","fields":[{fields}]}}}}"#
        )
    };
    let list = |extra: &str| {
        format!(
            r#"{{"type":"record","name":"Node","fields":[{{"name":"v","type":"int"}},{{"name":"next","type":["null","Node"],"default":null}}{extra}]}}"#
        )
    };
    vec![
        case("identical", rec(A), rec(A), true, true),
        case(
            "add a field with a default",
            rec(A),
            rec(&format!(r#"{A},{{"name":"b","type":"int","default":0}}"#)),
            true,
            true,
        ),
        case(
            "add a field without a default",
            rec(A),
            rec(&format!(r#"{A},{{"name":"b","type":"int"}}"#)),
            false,
            true,
        ),
        case(
            "remove a field that had a default",
            rec(&format!(r#"{A},{{"name":"b","type":"int","default":0}}"#)),
            rec(A),
            true,
            true,
        ),
        case(
            "remove a field without a default",
            rec(&format!(r#"{A},{{"name":"b","type":"int"}}"#)),
            rec(A),
            true,
            false,
        ),
        case(
            "int to long",
            rec(&f(r#""int""#)),
            rec(&f(r#""long""#)),
            true,
            false,
        ),
        case(
            "long to int",
            rec(&f(r#""long""#)),
            rec(&f(r#""int""#)),
            false,
            true,
        ),
        case(
            "int to float",
            rec(&f(r#""int""#)),
            rec(&f(r#""float""#)),
            true,
            false,
        ),
        case(
            "float to double",
            rec(&f(r#""float""#)),
            rec(&f(r#""double""#)),
            true,
            false,
        ),
        case(
            "long to double",
            rec(&f(r#""long""#)),
            rec(&f(r#""double""#)),
            true,
            false,
        ),
        case(
            "double to float",
            rec(&f(r#""double""#)),
            rec(&f(r#""float""#)),
            false,
            true,
        ),
        case(
            "string to bytes",
            rec(&f(r#""string""#)),
            rec(&f(r#""bytes""#)),
            true,
            true,
        ),
        case(
            "int to string",
            rec(&f(r#""int""#)),
            rec(&f(r#""string""#)),
            false,
            false,
        ),
        case(
            "boolean to int",
            rec(&f(r#""boolean""#)),
            rec(&f(r#""int""#)),
            false,
            false,
        ),
        case(
            "make a field nullable",
            rec(&f(r#""string""#)),
            rec(&f(r#"["null","string"]"#)),
            true,
            false,
        ),
        case(
            "make a nullable field required",
            rec(&f(r#"["null","string"]"#)),
            rec(&f(r#""string""#)),
            false,
            true,
        ),
        case(
            "add a union branch",
            rec(&f(r#"["null","string"]"#)),
            rec(&f(r#"["null","string","int"]"#)),
            true,
            false,
        ),
        case(
            "remove a union branch",
            rec(&f(r#"["null","string","int"]"#)),
            rec(&f(r#"["null","string"]"#)),
            false,
            true,
        ),
        case(
            "reorder union branches",
            rec(&f(r#"["null","string"]"#)),
            rec(&f(r#"["string","null"]"#)),
            true,
            true,
        ),
        case(
            "int into a union with long",
            rec(&f(r#""int""#)),
            rec(&f(r#"["null","long"]"#)),
            true,
            false,
        ),
        case(
            "null to a nullable string",
            rec(&f(r#""null""#)),
            rec(&f(r#"["null","string"]"#)),
            true,
            false,
        ),
        case(
            "add an enum symbol, no default",
            rec(&enum_field(r#""A","B""#, None)),
            rec(&enum_field(r#""A","B","C""#, None)),
            true,
            false,
        ),
        case(
            "add an enum symbol, the old enum has a default",
            rec(&enum_field(r#""A","B""#, Some("A"))),
            rec(&enum_field(r#""A","B","C""#, Some("A"))),
            true,
            true,
        ),
        case(
            "remove an enum symbol, no default",
            rec(&enum_field(r#""A","B","C""#, None)),
            rec(&enum_field(r#""A","B""#, None)),
            false,
            true,
        ),
        case(
            "remove an enum symbol, the new enum has a default",
            rec(&enum_field(r#""A","B","C""#, Some("A"))),
            rec(&enum_field(r#""A","B""#, Some("A"))),
            true,
            true,
        ),
        case(
            "reorder enum symbols",
            rec(&enum_field(r#""A","B""#, None)),
            rec(&enum_field(r#""B","A""#, None)),
            true,
            true,
        ),
        case(
            "add an enum symbol inside a union",
            rec(&format!(
                r#"{A},{{"name":"d","type":["null",{{"type":"enum","name":"D","symbols":["M","W"]}}],"default":null}}"#
            )),
            rec(&format!(
                r#"{A},{{"name":"d","type":["null",{{"type":"enum","name":"D","symbols":["M","W","T"]}}],"default":null}}"#
            )),
            true,
            false,
        ),
        case(
            "rename a field with an alias",
            rec(&format!(r#"{A},{{"name":"name","type":"string"}}"#)),
            rec(&format!(
                r#"{A},{{"name":"full_name","aliases":["name"],"type":"string"}}"#
            )),
            true,
            false,
        ),
        case(
            "rename a field without an alias",
            rec(&format!(r#"{A},{{"name":"name","type":"string"}}"#)),
            rec(&format!(r#"{A},{{"name":"full_name","type":"string"}}"#)),
            false,
            false,
        ),
        case(
            "rename a field with an alias and a default",
            rec(&format!(
                r#"{A},{{"name":"name","type":"string","default":""}}"#
            )),
            rec(&format!(
                r#"{A},{{"name":"full_name","aliases":["name"],"type":"string","default":""}}"#
            )),
            true,
            true,
        ),
        case(
            "rename the record with an alias",
            rec(A),
            format!(
                r#"{{"type":"record","name":"F","namespace":"t","aliases":["E"],"fields":[{A}]}}"#
            ),
            true,
            false,
        ),
        case(
            "rename the record without an alias",
            rec(A),
            format!(r#"{{"type":"record","name":"F","namespace":"t","fields":[{A}]}}"#),
            false,
            false,
        ),
        case(
            "change only the namespace",
            rec(A),
            format!(r#"{{"type":"record","name":"E","namespace":"u","fields":[{A}]}}"#),
            true,
            true,
        ),
        case(
            "change a fixed size",
            rec(&f(r#"{"type":"fixed","name":"H","size":16}"#)),
            rec(&f(r#"{"type":"fixed","name":"H","size":32}"#)),
            false,
            false,
        ),
        case(
            "array items int to long",
            rec(&f(r#"{"type":"array","items":"int"}"#)),
            rec(&f(r#"{"type":"array","items":"long"}"#)),
            true,
            false,
        ),
        case(
            "map values long to int",
            rec(&f(r#"{"type":"map","values":"long"}"#)),
            rec(&f(r#"{"type":"map","values":"int"}"#)),
            false,
            true,
        ),
        case(
            "map to array",
            rec(&f(r#"{"type":"map","values":"int"}"#)),
            rec(&f(r#"{"type":"array","items":"int"}"#)),
            false,
            false,
        ),
        case(
            "string to an array of strings",
            rec(&f(r#""string""#)),
            rec(&f(r#"{"type":"array","items":"string"}"#)),
            false,
            false,
        ),
        case(
            "nested record gains a field with a default",
            rec(&nested(r#"{"name":"p","type":"int"}"#)),
            rec(&nested(
                r#"{"name":"p","type":"int"},{"name":"q","type":"int","default":1}"#,
            )),
            true,
            true,
        ),
        case(
            "nested record gains a field without a default",
            rec(&nested(r#"{"name":"p","type":"int"}"#)),
            rec(&nested(
                r#"{"name":"p","type":"int"},{"name":"q","type":"int"}"#,
            )),
            false,
            true,
        ),
        case(
            "nested record field int to long",
            rec(&nested(r#"{"name":"p","type":"int"}"#)),
            rec(&nested(r#"{"name":"p","type":"long"}"#)),
            true,
            false,
        ),
        case(
            "record field becomes an enum",
            rec(&nested(r#"{"name":"p","type":"int"}"#)),
            rec(&format!(
                r#"{A},{{"name":"inner","type":{{"type":"enum","name":"In","symbols":["X"]}}}}"#
            )),
            false,
            false,
        ),
        case(
            "change a default value only",
            rec(&format!(r#"{A},{{"name":"b","type":"int","default":0}}"#)),
            rec(&format!(r#"{A},{{"name":"b","type":"int","default":7}}"#)),
            true,
            true,
        ),
        case(
            "add a default to a field",
            rec(&format!(r#"{A},{{"name":"b","type":"int"}}"#)),
            rec(&format!(r#"{A},{{"name":"b","type":"int","default":7}}"#)),
            true,
            true,
        ),
        case(
            "add a logical type over the same type",
            rec(&f(r#""long""#)),
            rec(&f(r#"{"type":"long","logicalType":"timestamp-millis"}"#)),
            true,
            true,
        ),
        case(
            "recursive record gains a field with a default",
            list(""),
            list(r#",{"name":"w","type":"int","default":0}"#),
            true,
            true,
        ),
        case(
            "recursive record gains a field without a default",
            list(""),
            list(r#",{"name":"w","type":"int"}"#),
            false,
            true,
        ),
        case(
            "top-level string to bytes",
            r#""string""#.into(),
            r#""bytes""#.into(),
            true,
            true,
        ),
        case(
            "top-level long to a nullable long",
            r#""long""#.into(),
            r#"["null","long"]"#.into(),
            true,
            false,
        ),
        case(
            "the seed's user_event v1 to v2",
            seed_v1.clone(),
            seed_v2.clone(),
            true,
            true,
        ),
        case(
            "the seed's user_event v2 back to v1",
            seed_v2,
            seed_v1,
            true,
            true,
        ),
    ]
}

fn parse(text: &str, case: &str) -> AvroSchema {
    AvroSchema::parse(text).unwrap_or_else(|e| panic!("{case}: {e}\n{text}"))
}

#[test]
fn every_change_gets_the_expected_verdict_in_every_mode() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let (old, new) = (parse(&c.old, c.name), parse(&c.new, c.name));
        for level in CompatibilityLevel::ALL {
            let expected = match level {
                CompatibilityLevel::None => true,
                CompatibilityLevel::Backward | CompatibilityLevel::BackwardTransitive => c.backward,
                CompatibilityLevel::Forward | CompatibilityLevel::ForwardTransitive => c.forward,
                CompatibilityLevel::Full | CompatibilityLevel::FullTransitive => {
                    c.backward && c.forward
                }
            };
            let problems = check_versions(level, &new, &[(1, &old)]);
            if problems.is_empty() != expected {
                failures.push(format!(
                    "{} under {level}: expected {}, got {:?}",
                    c.name,
                    if expected {
                        "compatible"
                    } else {
                        "incompatible"
                    },
                    problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn transitive_levels_check_every_earlier_version() {
    // BACKWARD: v3 reads v2 (b exists) but not v1 (b missing, no default).
    let history = [
        rec(A),
        rec(&format!(r#"{A},{{"name":"b","type":"int","default":0}}"#)),
    ];
    let v3 = parse(&rec(&format!(r#"{A},{{"name":"b","type":"int"}}"#)), "v3");
    let parsed: Vec<AvroSchema> = history.iter().map(|h| parse(h, "history")).collect();
    let earlier: Vec<(u32, &AvroSchema)> = parsed.iter().zip(1..).map(|(s, v)| (v, s)).collect();
    assert!(check_versions(CompatibilityLevel::Backward, &v3, &earlier).is_empty());
    let problems = check_versions(CompatibilityLevel::BackwardTransitive, &v3, &earlier);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].version, 1);
    assert!(
        problems[0]
            .to_string()
            .contains("READER_FIELD_MISSING_DEFAULT_VALUE")
    );
    assert!(
        problems[0].to_string().contains("/fields/b"),
        "{}",
        problems[0]
    );

    // FORWARD: v2 reads v3 (c has a default in v2) but v1 does not.
    let history = [
        rec(&format!(r#"{A},{{"name":"c","type":"int"}}"#)),
        rec(&format!(r#"{A},{{"name":"c","type":"int","default":0}}"#)),
    ];
    let v3 = parse(&rec(A), "v3");
    let parsed: Vec<AvroSchema> = history.iter().map(|h| parse(h, "history")).collect();
    let earlier: Vec<(u32, &AvroSchema)> = parsed.iter().zip(1..).map(|(s, v)| (v, s)).collect();
    assert!(check_versions(CompatibilityLevel::Forward, &v3, &earlier).is_empty());
    assert!(check_versions(CompatibilityLevel::Full, &v3, &earlier).is_empty());
    for level in [
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::FullTransitive,
    ] {
        let problems = check_versions(level, &v3, &earlier);
        assert_eq!(problems.len(), 1, "{level}: {problems:?}");
        assert_eq!((problems[0].version, problems[0].direction), (1, "FORWARD"));
    }
    assert!(check_versions(CompatibilityLevel::None, &v3, &earlier).is_empty());
}
