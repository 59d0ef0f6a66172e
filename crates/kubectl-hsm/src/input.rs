//! What `create` and `update` write: `--from-literal`, `--from-file` (a `.json` object, a
//! `.env` file, or one value), `--interactive`; merged into the existing secret or
//! replacing it; and the key-level difference (never values) shown by `--diff` and
//! `--dry-run`.
//!
//! No message here quotes a value or a line of input: a line of a `.env` file that is not
//! `KEY=VALUE` may be a password pasted on its own.

use crate::model::{SecretData, SecretValue};
use serde::Serialize;
use std::io::BufRead;
use std::path::Path;

/// Input that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// None of the three input methods.
    #[error("give one of --from-literal, --from-file or --interactive")]
    NoMethod,
    /// More than one.
    #[error("give only one of --from-literal, --from-file or --interactive")]
    ManyMethods,
    /// `update --replace`.
    #[error("--replace cannot be used with update: use create --replace")]
    ReplaceOnUpdate,
    /// A `--from-literal` without `=`.
    #[error("--from-literal number {0} is not KEY=VALUE (it has no '=')")]
    Literal(usize),
    /// An empty key.
    #[error("an empty key in {0}")]
    EmptyKey(String),
    /// The same key twice.
    #[error("key {key:?} is given twice (again in {origin})")]
    Duplicate {
        /// The key.
        key: String,
        /// Where it came again.
        origin: String,
    },
    /// A file cannot be read.
    #[error("cannot read {path}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.json` file is not a flat object.
    #[error("{path} is not a JSON object of strings: {detail}")]
    Json {
        /// The file.
        path: String,
        /// What is wrong (never a value).
        detail: String,
    },
    /// A `.env` line is not `KEY=VALUE`.
    #[error("line {line} of {path} is not KEY=VALUE")]
    EnvLine {
        /// The file.
        path: String,
        /// 1-based.
        line: usize,
    },
    /// Nothing to write.
    #[error("no keys to write in {0}")]
    Empty(String),
    /// The prompt failed.
    #[error("cannot read the input")]
    Prompt(#[source] std::io::Error),
}

/// Where the new data comes from.
pub enum Source<'a> {
    /// `KEY=VALUE` pairs.
    Literals(&'a [String]),
    /// `[KEY=]PATH` specs.
    Files(&'a [String]),
    /// Prompts (or key/value lines on a non-terminal stdin).
    Interactive,
}

/// The one input method given, or why not.
pub fn source<'a>(
    literals: &'a [String],
    files: &'a [String],
    interactive: bool,
) -> Result<Source<'a>, InputError> {
    let given = usize::from(!literals.is_empty())
        + usize::from(!files.is_empty())
        + usize::from(interactive);
    match given {
        0 => Err(InputError::NoMethod),
        1 if !literals.is_empty() => Ok(Source::Literals(literals)),
        1 if !files.is_empty() => Ok(Source::Files(files)),
        1 => Ok(Source::Interactive),
        _ => Err(InputError::ManyMethods),
    }
}

fn insert(
    data: &mut SecretData,
    key: &str,
    value: SecretValue,
    origin: &str,
) -> Result<(), InputError> {
    if key.is_empty() {
        return Err(InputError::EmptyKey(origin.to_owned()));
    }
    if data.insert(key.to_owned(), value).is_some() {
        return Err(InputError::Duplicate {
            key: key.to_owned(),
            origin: origin.to_owned(),
        });
    }
    Ok(())
}

/// `--from-literal KEY=VALUE` pairs (the value may contain `=`).
pub fn from_literals(literals: &[String]) -> Result<SecretData, InputError> {
    let mut data = SecretData::new();
    for (n, literal) in literals.iter().enumerate() {
        let (key, value) = literal.split_once('=').ok_or(InputError::Literal(n + 1))?;
        insert(&mut data, key, value.into(), "--from-literal")?;
    }
    Ok(data)
}

/// How a `--from-file` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// A JSON object: each member a key.
    Json,
    /// `KEY=VALUE` lines.
    Env,
    /// The whole file is one value.
    Single,
}

/// The format of `path`: `KEY=PATH` is always one value (the user named the key);
/// otherwise `.json` and `.env` (also a file named `.env`) by extension, anything else one
/// value keyed by the file name without its extension. The content is never sniffed: a
/// certificate with `=` in its base64 must not be split into keys.
pub fn detect(explicit_key: bool, path: &Path) -> FileFormat {
    if explicit_key {
        return FileFormat::Single;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.ends_with(".json") {
        FileFormat::Json
    } else if name.ends_with(".env") {
        FileFormat::Env
    } else {
        FileFormat::Single
    }
}

/// `--from-file [KEY=]PATH` specs, each read by [`detect`]ed format.
pub fn from_files(specs: &[String]) -> Result<SecretData, InputError> {
    let mut data = SecretData::new();
    for spec in specs {
        let (key, path) = match spec.split_once('=') {
            Some((key, path)) => (Some(key), Path::new(path)),
            None => (None, Path::new(spec.as_str())),
        };
        let shown = path.display().to_string();
        let content =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| InputError::File {
                path: shown.clone(),
                source,
            })?);
        let parsed = match detect(key.is_some(), path) {
            FileFormat::Json => parse_json(&content, &shown)?,
            FileFormat::Env => parse_env(&content, &shown)?,
            FileFormat::Single => {
                let key = match key {
                    Some(key) => key.to_owned(),
                    None => path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default()
                        .to_owned(),
                };
                let mut one = SecretData::new();
                insert(&mut one, &key, SecretValue::new(content.to_vec()), &shown)?;
                one
            }
        };
        for (key, value) in parsed {
            insert(&mut data, &key, value, &shown)?;
        }
    }
    Ok(data)
}

/// A flat JSON object: strings as they are, numbers and booleans as their text, `null`
/// as empty; nested objects and arrays refused.
pub fn parse_json(content: &[u8], origin: &str) -> Result<SecretData, InputError> {
    let value: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| InputError::Json {
            path: origin.to_owned(),
            detail: format!("invalid JSON at line {} column {}", e.line(), e.column()),
        })?;
    let serde_json::Value::Object(members) = value else {
        return Err(InputError::Json {
            path: origin.to_owned(),
            detail: "the top level is not an object".into(),
        });
    };
    let mut data = SecretData::new();
    for (key, value) in members {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(InputError::Json {
                    path: origin.to_owned(),
                    detail: format!("key {key:?} holds a nested array or object"),
                });
            }
        };
        insert(&mut data, &key, SecretValue::new(text.into_bytes()), origin)?;
    }
    if data.is_empty() {
        return Err(InputError::Empty(origin.to_owned()));
    }
    Ok(data)
}

/// `KEY=VALUE` lines: blank lines and `#` comments skipped, an `export ` prefix allowed,
/// key and value trimmed, one pair of matching quotes around the value removed.
pub fn parse_env(content: &[u8], origin: &str) -> Result<SecretData, InputError> {
    let text = std::str::from_utf8(content).map_err(|_| InputError::Json {
        path: origin.to_owned(),
        detail: "not UTF-8 text".into(),
    })?;
    let mut data = SecretData::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or(InputError::EnvLine {
            path: origin.to_owned(),
            line: n + 1,
        })?;
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        insert(&mut data, key.trim(), value.into(), origin)?;
    }
    if data.is_empty() {
        return Err(InputError::Empty(origin.to_owned()));
    }
    Ok(data)
}

/// Key and value pairs from `lines` (a key line, then its value from `value`), until an
/// empty key or the end.
pub fn read_pairs(
    mut lines: impl BufRead,
    mut ask_key: impl FnMut(),
    mut value: impl FnMut(&str, &mut dyn BufRead) -> std::io::Result<String>,
) -> Result<SecretData, InputError> {
    let mut data = SecretData::new();
    loop {
        ask_key();
        let mut key = String::new();
        if lines.read_line(&mut key).map_err(InputError::Prompt)? == 0 {
            break;
        }
        let key = key.trim();
        if key.is_empty() {
            break;
        }
        let text = zeroize::Zeroizing::new(value(key, &mut lines).map_err(InputError::Prompt)?);
        insert(&mut data, key, text.as_str().into(), "the input")?;
    }
    if data.is_empty() {
        return Err(InputError::Empty("the input".into()));
    }
    Ok(data)
}

/// `--interactive`: on a terminal, keys are read as typed and values without echo; on a
/// pipe, key and value lines alternate.
pub fn interactive() -> Result<SecretData, InputError> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprintln!("Enter keys and values (an empty key ends):");
    }
    read_pairs(
        stdin.lock(),
        || {
            if terminal {
                eprint!("Key: ");
            }
        },
        |key, lines| {
            if terminal {
                rpassword::prompt_password(format!("Value for {key:?} (not shown): "))
            } else {
                let mut line = String::new();
                lines.read_line(&mut line)?;
                let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
                zeroize::Zeroize::zeroize(&mut line);
                Ok(trimmed)
            }
        },
    )
}

/// What a write will do, key by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Keys that are new.
    pub added: Vec<String>,
    /// Keys whose value changes.
    pub changed: Vec<String>,
    /// Keys that go away (only with --replace).
    pub removed: Vec<String>,
    /// Keys that stay as they are.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The secret to write and how it differs from what exists.
#[derive(Debug)]
pub struct Plan {
    /// The whole secret to POST.
    pub data: SecretData,
    /// The difference.
    pub changes: Changes,
    /// There is a secret already.
    pub exists: bool,
}

/// Merges `new` into `existing` (new values win), or with `replace` takes `new` alone.
pub fn plan(existing: Option<&SecretData>, new: SecretData, replace: bool) -> Plan {
    let empty = SecretData::new();
    let before = existing.unwrap_or(&empty);
    let data = if replace {
        new
    } else {
        let mut merged = before.clone();
        merged.extend(new);
        merged
    };
    let mut changes = Changes::default();
    for (key, value) in &data {
        match before.get(key) {
            None => changes.added.push(key.clone()),
            Some(old) if old != value => changes.changed.push(key.clone()),
            Some(_) => changes.unchanged.push(key.clone()),
        }
    }
    changes.removed = before
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    Plan {
        data,
        changes,
        exists: existing.is_some(),
    }
}

/// The `--diff` text: one line per key, `+` added, `~` changed, `-` removed (values are
/// never shown).
pub fn diff_text(name: &str, changes: &Changes) -> String {
    let mut out = format!("Differences for secret {name} (keys only, values are not shown):\n");
    for key in &changes.added {
        out.push_str(&format!("+ {key}\n"));
    }
    for key in &changes.changed {
        out.push_str(&format!("~ {key}\n"));
    }
    for key in &changes.removed {
        out.push_str(&format!("- {key}\n"));
    }
    if changes.is_empty() {
        out.push_str("No changes.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect()
    }

    fn keys(data: &SecretData) -> Vec<&str> {
        data.keys().map(String::as_str).collect()
    }

    #[test]
    fn exactly_one_input_method() {
        let some = vec!["a=b".to_string()];
        assert!(matches!(source(&[], &[], false), Err(InputError::NoMethod)));
        assert!(matches!(
            source(&some, &some, false),
            Err(InputError::ManyMethods)
        ));
        assert!(matches!(
            source(&some, &[], true),
            Err(InputError::ManyMethods)
        ));
        assert!(matches!(source(&[], &some, false), Ok(Source::Files(_))));
        assert!(matches!(source(&[], &[], true), Ok(Source::Interactive)));
    }

    #[test]
    fn literals_split_at_the_first_equals() {
        let d = from_literals(&["url=postgres://h/db?a=b".into(), "user=admin".into()]).unwrap();
        assert_eq!(d["url"].as_text(), Some("postgres://h/db?a=b"));
        let e = from_literals(&["ok=1".into(), "s3cr3t-no-key".into()]).unwrap_err();
        assert!(matches!(e, InputError::Literal(2)));
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(matches!(
            from_literals(&["a=1".into(), "a=2".into()]),
            Err(InputError::Duplicate { .. })
        ));
        assert!(matches!(
            from_literals(&["=1".into()]),
            Err(InputError::EmptyKey(_))
        ));
    }

    #[test]
    fn formats_are_detected_by_name_and_an_explicit_key_wins() {
        assert_eq!(detect(false, Path::new("dir/creds.json")), FileFormat::Json);
        assert_eq!(detect(false, Path::new("CREDS.JSON")), FileFormat::Json);
        assert_eq!(detect(false, Path::new(".env")), FileFormat::Env);
        assert_eq!(detect(false, Path::new("prod.env")), FileFormat::Env);
        assert_eq!(detect(false, Path::new("server.crt")), FileFormat::Single);
        assert_eq!(detect(true, Path::new("creds.json")), FileFormat::Single);
    }

    #[test]
    fn env_files_parse_comments_quotes_and_export() {
        let d = parse_env(
            b"# db\nexport USER=admin\n\nPASSWORD = \"p=ss word\"\nTOKEN='x'\nEMPTY=\n",
            "t.env",
        )
        .unwrap();
        assert_eq!(keys(&d), ["EMPTY", "PASSWORD", "TOKEN", "USER"]);
        assert_eq!(d["PASSWORD"].as_text(), Some("p=ss word"));
        assert_eq!(d["TOKEN"].as_text(), Some("x"));
        assert_eq!(d["EMPTY"].as_text(), Some(""));
    }

    #[test]
    fn a_bad_env_line_is_named_by_number_not_content() {
        let e = parse_env(b"A=1\nhunter2\n", "t.env").unwrap_err();
        assert!(matches!(e, InputError::EnvLine { line: 2, .. }), "{e:?}");
        assert!(!e.to_string().contains("hunter2"));
        assert!(matches!(
            parse_env(b"A=1\nA=2\n", "t.env"),
            Err(InputError::Duplicate { .. })
        ));
        assert!(matches!(
            parse_env(b"# only\n", "t.env"),
            Err(InputError::Empty(_))
        ));
    }

    #[test]
    fn json_files_take_scalars_and_refuse_nesting() {
        let d = parse_json(
            br#"{"user":"admin","port":5432,"tls":true,"note":null}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(d["port"].as_text(), Some("5432"));
        assert_eq!(d["tls"].as_text(), Some("true"));
        assert_eq!(d["note"].as_text(), Some(""));
        for bad in [&br#"{"a":{"b":1}}"#[..], br#"["x"]"#, br#"{"a":"#, br#"{}"#] {
            assert!(parse_json(bad, "c.json").is_err());
        }
        let e = parse_json(br#"{"pw":"hunter2""#, "c.json").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn files_by_spec() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(p("server.crt"), "-----BEGIN CERT-----\nAB==\n").unwrap();
        std::fs::write(p("app.env"), "A=1\nB=2\n").unwrap();
        std::fs::write(p("more.json"), r#"{"C":"3"}"#).unwrap();
        let d = from_files(&[
            p("server.crt"),
            p("app.env"),
            p("more.json"),
            format!("tls.key={}", p("app.env")),
        ])
        .unwrap();
        assert_eq!(keys(&d), ["A", "B", "C", "server", "tls.key"]);
        assert_eq!(d["tls.key"].as_text(), Some("A=1\nB=2\n"));
        assert_eq!(d["server"].as_text(), Some("-----BEGIN CERT-----\nAB==\n"));
        let e = from_files(&[p("app.env"), p("app.env")]).unwrap_err();
        assert!(matches!(e, InputError::Duplicate { .. }));
        assert!(matches!(
            from_files(&[p("missing.env")]),
            Err(InputError::File { .. })
        ));
    }

    #[test]
    fn pairs_alternate_until_an_empty_key() {
        let input = b"user\nadmin\npassword\ns3 cr=t\n\nignored\n";
        let d = read_pairs(
            &input[..],
            || {},
            |_, lines| {
                let mut l = String::new();
                lines.read_line(&mut l)?;
                Ok(l.trim_end().to_owned())
            },
        )
        .unwrap();
        assert_eq!(keys(&d), ["password", "user"]);
        assert_eq!(d["password"].as_text(), Some("s3 cr=t"));
        assert!(read_pairs(&b""[..], || {}, |_, _| Ok(String::new())).is_err());
    }

    #[test]
    fn merge_keeps_old_keys_and_replace_drops_them() {
        let old = data(&[("user", "admin"), ("password", "a")]);
        let merged = plan(Some(&old), data(&[("password", "b"), ("host", "h")]), false);
        assert_eq!(keys(&merged.data), ["host", "password", "user"]);
        assert_eq!(merged.data["password"].as_text(), Some("b"));
        assert_eq!(merged.changes.added, ["host"]);
        assert_eq!(merged.changes.changed, ["password"]);
        assert_eq!(merged.changes.unchanged, ["user"]);
        assert!(merged.changes.removed.is_empty());

        let replaced = plan(Some(&old), data(&[("password", "a")]), true);
        assert_eq!(keys(&replaced.data), ["password"]);
        assert_eq!(replaced.changes.removed, ["user"]);
        assert_eq!(replaced.changes.unchanged, ["password"]);

        let created = plan(None, data(&[("k", "v")]), false);
        assert!(!created.exists);
        assert_eq!(created.changes.added, ["k"]);
    }

    #[test]
    fn the_diff_names_keys_never_values() {
        let old = data(&[("user", "admin"), ("password", "old-secret")]);
        let p = plan(
            Some(&old),
            data(&[("password", "new-secret"), ("host", "h")]),
            true,
        );
        let text = diff_text("db", &p.changes);
        assert!(
            text.contains("+ host\n") && text.contains("~ password\n") && text.contains("- user\n"),
            "{text}"
        );
        assert!(!text.contains("new-secret"), "{text}");
        assert!(
            !text.contains("old-secret") && !text.contains("admin"),
            "{text}"
        );
        let same = plan(Some(&old), data(&[("user", "admin")]), false);
        assert!(diff_text("db", &same.changes).contains("No changes."));
    }
}
