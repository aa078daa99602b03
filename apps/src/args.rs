//! A tiny command-line parser: `--name value` pairs and repeated options,
//! with errors that name the bad argument. (The binaries here take a handful
//! of options; a parser crate is not worth its build time.)

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// `--help` (or `-h`) was given: not a failure. [`exit_code`] prints the
/// usage on stdout and exits 0.
#[derive(Debug)]
pub struct HelpRequested;

impl std::fmt::Display for HelpRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("--help")
    }
}

impl std::error::Error for HelpRequested {}

/// How a binary ends after its command line could not be used: for
/// `--help`, `usage` on stdout and exit code 0; otherwise the error on
/// stderr after `program: ` and exit code 2 (bad usage).
pub fn exit_code(program: &str, usage: &str, error: &anyhow::Error) -> std::process::ExitCode {
    if error.is::<HelpRequested>() {
        println!("{usage}");
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("{program}: {error:#}");
        std::process::ExitCode::from(2)
    }
}

/// The options of `known` that `usage` does not mention as `--name`
/// (each binary's tests check that its `--help` lists every option).
pub fn unlisted<'a>(usage: &str, known: &[&'a str]) -> Vec<&'a str> {
    known
        .iter()
        .copied()
        .filter(|name| {
            let flag = format!("--{name}");
            // `--name` followed by something that cannot continue a flag name.
            !usage.match_indices(&flag).any(|(at, _)| {
                usage[at + flag.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'))
            })
        })
        .collect()
}

/// Parsed `--name value` options.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, Vec<String>>,
}

impl Args {
    /// Parses `args` (without the program name). Every option must be one of
    /// `known` and take a value; `--help` is reported as [`HelpRequested`]
    /// (see [`exit_code`]); other errors carry `usage`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        known: &[&str],
        usage: &str,
    ) -> Result<Self> {
        let mut parsed = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Err(HelpRequested.into());
            }
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}\n\n{usage}");
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    let value = args
                        .next()
                        .with_context(|| format!("--{name} needs a value\n\n{usage}"))?;
                    (name.to_owned(), value)
                }
            };
            if !known.contains(&name.as_str()) {
                bail!("unknown option --{name}\n\n{usage}");
            }
            parsed.values.entry(name).or_default().push(value);
        }
        Ok(parsed)
    }

    /// The last value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a repeated `--name`.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// `--name` parsed as `T`, or `default` when absent.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {raw:?}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        Args::parse(
            args.iter().map(|s| s.to_string()),
            &["topic", "events"],
            "usage: x",
        )
    }

    #[test]
    fn values_repeats_and_equals_form() {
        let args = parse(&["--topic", "a:3", "--topic=b:1", "--events", "7"]).unwrap();
        assert_eq!(args.all("topic"), ["a:3", "b:1"]);
        assert_eq!(args.parse_or("events", 0u64).unwrap(), 7);
        assert_eq!(args.parse_or("missing", 5u64).unwrap(), 5);
    }

    #[test]
    fn errors_name_the_argument() {
        assert!(
            parse(&["--nope", "1"])
                .unwrap_err()
                .to_string()
                .contains("unknown option --nope")
        );
        assert!(
            parse(&["--topic"])
                .unwrap_err()
                .to_string()
                .contains("--topic needs a value")
        );
        assert!(
            parse(&["stray"])
                .unwrap_err()
                .to_string()
                .contains("unexpected argument \"stray\"")
        );
        let bad = parse(&["--events", "many"])
            .unwrap()
            .parse_or("events", 0u64)
            .unwrap_err();
        assert!(bad.to_string().contains("--events \"many\""), "{bad}");
        assert!(parse(&["--help"]).unwrap_err().is::<HelpRequested>());
        assert!(
            parse(&["--events", "1", "-h"])
                .unwrap_err()
                .is::<HelpRequested>()
        );
    }

    #[test]
    fn unlisted_finds_options_the_usage_does_not_name() {
        let usage = "usage: x --topic NAME [--events-file F]";
        assert_eq!(
            unlisted(usage, &["topic", "events", "events-file"]),
            ["events"]
        );
        assert!(unlisted("[--a] [--b=1] --c", &["a", "b", "c"]).is_empty());
    }
}
