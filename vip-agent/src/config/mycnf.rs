//! Reads MySQL option files (my.cnf) the way mysqld does: `[group]` headers, `name = value`
//! or a bare `name`, `#` / `;` comment lines and `#` trailing comments, values quoted or
//! not, `!include FILE` and `!includedir DIR` (its `*.cnf` files, sorted). Names are
//! normalised: `loose-` dropped, `-` read as `_`, lower case.
//!
//! [`parse_line`] is pure; [`read`] does the file I/O and guards against include loops.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where an option was set, printed `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `name[=value]` line under a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The group, lower case: `mysqld`, `mysqld3306`, …
    pub group: String,
    /// Normalised name (`loose-greatdb-ha-port` → `greatdb_ha_port`).
    pub name: String,
    /// `None` for a bare `name` (a boolean switched on).
    pub value: Option<String>,
    pub origin: Origin,
}

/// Every entry of a file and its includes, in the order mysqld reads them, and the
/// problems that did not stop the reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionFile {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

/// What one line of an option file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Blank,
    Group(String),
    Include(String),
    IncludeDir(String),
    Option { name: String, value: Option<String> },
    Invalid(String),
}

/// Includes nest at most this deep (mysqld's own limit is similar); a deeper chain is a loop
/// through differently spelled paths or a mistake.
const MAX_DEPTH: usize = 10;

pub fn parse_line(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return Line::Blank;
    }
    if let Some(rest) = line.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((group, after))
                if after.trim().is_empty() || after.trim_start().starts_with('#') =>
            {
                Line::Group(group.trim().to_ascii_lowercase())
            }
            _ => Line::Invalid(format!("malformed group header `{line}`")),
        };
    }
    if let Some(rest) = line.strip_prefix("!includedir")
        && rest.starts_with(char::is_whitespace)
    {
        return Line::IncludeDir(rest.trim().to_string());
    }
    if let Some(rest) = line.strip_prefix("!include")
        && rest.starts_with(char::is_whitespace)
    {
        return Line::Include(rest.trim().to_string());
    }
    if line.starts_with('!') {
        return Line::Invalid(format!("unknown directive `{line}`"));
    }
    let (name, value) = match line.split_once('=') {
        Some((name, value)) => match parse_value(value) {
            Ok(v) => (name, Some(v)),
            Err(why) => return Line::Invalid(why),
        },
        // A bare name may still carry a trailing comment.
        None => (line.split('#').next().unwrap_or(line), None),
    };
    let name = normalise(name);
    if name.is_empty() {
        return Line::Invalid(format!("option without a name `{line}`"));
    }
    Line::Option { name, value }
}

/// `loose-Greatdb-HA-port` → `greatdb_ha_port`.
pub fn normalise(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase().replace('-', "_");
    name.strip_prefix("loose_")
        .map(str::to_string)
        .unwrap_or(name)
}

/// A value after `=`: quoted (`'…'` or `"…"`, the quotes removed) or bare up to a `#`
/// comment; backslash escapes `\n \t \r \b \s \\ \' \"` as mysqld reads them.
pub fn parse_value(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let mut chars = raw.chars();
    let quote = match raw.chars().next() {
        Some(q @ ('\'' | '"')) => {
            chars.next();
            Some(q)
        }
        _ => None,
    };
    let mut out = String::new();
    let mut closed = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('b') => out.push('\u{8}'),
                Some('s') => out.push(' '),
                Some(other @ ('\\' | '\'' | '"')) => out.push(other),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c if Some(c) == quote => {
                closed = true;
                break;
            }
            '#' if quote.is_none() => break,
            c => out.push(c),
        }
    }
    match quote {
        None => Ok(out.trim_end().to_string()),
        Some(q) if !closed => Err(format!("unterminated {q}quoted{q} value")),
        Some(_) => {
            let rest = chars.as_str().trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                Ok(out)
            } else {
                Err(format!("text after the closing quote: `{rest}`"))
            }
        }
    }
}

/// Reads `path` and everything it includes. `Err` only when `path` itself can't be read.
pub fn read(path: &Path) -> Result<OptionFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = OptionFile::default();
    let mut stack = vec![canonical(path)];
    read_text(&text, path, &mut stack, &mut out);
    Ok(out)
}

/// Reads option file `text` as if it were the file `path`, without touching the file
/// system: `!include` and `!includedir` lines are not followed, only noted. Pure (for
/// the fuzzer and for tests).
pub fn read_str(text: &str, path: &Path) -> OptionFile {
    let mut out = OptionFile::default();
    read_lines(text, path, &mut out, &mut |line, origin, out| {
        out.warnings.push(format!(
            "{origin}: {line:?} not followed (reading text only)"
        ));
    });
    out
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn read_text(text: &str, path: &Path, stack: &mut Vec<PathBuf>, out: &mut OptionFile) {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    read_lines(text, path, out, &mut |line, origin, out| match line {
        Line::Include(target) => include(&base.join(target), origin, stack, out),
        Line::IncludeDir(target) => {
            let dir = base.join(target);
            match std::fs::read_dir(&dir) {
                Err(e) => out.warnings.push(format!(
                    "{origin}: cannot read directory {}: {e}",
                    dir.display()
                )),
                Ok(listing) => {
                    let mut files: Vec<PathBuf> = listing
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "cnf") && p.is_file())
                        .collect();
                    files.sort();
                    for file in files {
                        include(&file, origin, stack, out);
                    }
                }
            }
        }
        _ => {}
    });
}

/// The lines of one file: groups and options go to `out`, include lines to `included`.
fn read_lines(
    text: &str,
    path: &Path,
    out: &mut OptionFile,
    included: &mut dyn FnMut(&Line, &Origin, &mut OptionFile),
) {
    // Like mysqld, an included file starts outside any group.
    let mut group: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            line: i + 1,
        };
        match parse_line(line) {
            Line::Blank => {}
            Line::Group(g) => group = Some(g),
            Line::Option { name, value } => match &group {
                Some(g) => out.entries.push(Entry {
                    group: g.clone(),
                    name,
                    value,
                    origin,
                }),
                None => out.warnings.push(format!(
                    "{origin}: option `{name}` outside any [group], ignored"
                )),
            },
            Line::Invalid(why) => out.warnings.push(format!("{origin}: {why}, ignored")),
            line @ (Line::Include(_) | Line::IncludeDir(_)) => included(&line, &origin, out),
        }
    }
}

fn include(path: &Path, origin: &Origin, stack: &mut Vec<PathBuf>, out: &mut OptionFile) {
    let id = canonical(path);
    if stack.contains(&id) {
        out.warnings.push(format!(
            "{origin}: include loop: {} is already being read, skipped",
            path.display()
        ));
        return;
    }
    if stack.len() > MAX_DEPTH {
        out.warnings.push(format!(
            "{origin}: includes nested deeper than {MAX_DEPTH}, {} skipped",
            path.display()
        ));
        return;
    }
    match std::fs::read_to_string(path) {
        Err(e) => out.warnings.push(format!(
            "{origin}: cannot read included {}: {e}",
            path.display()
        )),
        Ok(text) => {
            stack.push(id);
            read_text(&text, path, stack, out);
            stack.pop();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn option(name: &str, value: Option<&str>) -> Line {
        Line::Option {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn spellings_quotes_and_comments() {
        assert_eq!(
            parse_line("loose-greatdb_ha_mgr_vip_ip = 10.0.0.1"),
            option("greatdb_ha_mgr_vip_ip", Some("10.0.0.1"))
        );
        assert_eq!(
            parse_line("loose_greatdb-ha-mgr-vip-ip=10.0.0.1"),
            option("greatdb_ha_mgr_vip_ip", Some("10.0.0.1"))
        );
        assert_eq!(
            parse_line("greatdb_ha_port='33062'"),
            option("greatdb_ha_port", Some("33062"))
        );
        assert_eq!(
            parse_line("greatdb_ha_port = \"33062\"  # peer"),
            option("greatdb_ha_port", Some("33062"))
        );
        assert_eq!(
            parse_line("greatdb_ha_port = 33062 # peer"),
            option("greatdb_ha_port", Some("33062"))
        );
        assert_eq!(parse_line("x = 'a#b'"), option("x", Some("a#b")));
        assert_eq!(parse_line("x = \"a\\\"b\""), option("x", Some("a\"b")));
        assert_eq!(parse_line("x ="), option("x", Some("")));
        assert_eq!(
            parse_line("skip-name-resolve"),
            option("skip_name_resolve", None)
        );
        assert_eq!(
            parse_line("skip-name-resolve # c"),
            option("skip_name_resolve", None)
        );
        assert_eq!(parse_line("  # comment"), Line::Blank);
        assert_eq!(parse_line("; comment"), Line::Blank);
        assert_eq!(parse_line(""), Line::Blank);
        assert_eq!(
            parse_line("[ mysqld3306 ]"),
            Line::Group("mysqld3306".into())
        );
        assert_eq!(parse_line("[mysqld] # main"), Line::Group("mysqld".into()));
        assert_eq!(
            parse_line("!include /etc/a.cnf"),
            Line::Include("/etc/a.cnf".into())
        );
        assert_eq!(
            parse_line("!includedir conf.d"),
            Line::IncludeDir("conf.d".into())
        );
        assert!(matches!(parse_line("x = 'abc"), Line::Invalid(m) if m.contains("unterminated")));
        assert!(
            matches!(parse_line("x = 'a' b"), Line::Invalid(m) if m.contains("after the closing quote"))
        );
        assert!(matches!(parse_line("[mysqld"), Line::Invalid(_)));
        assert!(matches!(parse_line("!includex y"), Line::Invalid(_)));
    }

    #[test]
    fn text_alone_is_read_without_following_includes() {
        let f = read_str(
            "greatdb_ha_port = 1\n[mysqld]\nport = 3306\n!include /etc/shadow\n",
            Path::new("my.cnf"),
        );
        assert_eq!(f.entries.len(), 1);
        assert_eq!(f.entries[0].name, "port");
        assert_eq!(f.warnings.len(), 2, "{:?}", f.warnings);
        assert!(f.warnings[1].starts_with("my.cnf:4: Include(\"/etc/shadow\") not followed"));
    }

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("vip-agent-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(f: &OptionFile) -> Vec<String> {
        f.entries
            .iter()
            .map(|e| {
                format!(
                    "{}.{}={}",
                    e.group,
                    e.name,
                    e.value.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn includes_and_includedir_in_order() {
        let dir = TempDir::new("mycnf-inc");
        let main = dir.write(
            "my.cnf",
            "[mysqld]\nport = 3306\n!include extra.cnf\nsocket = /tmp/s\n!includedir conf.d\n",
        );
        dir.write("extra.cnf", "[mysqld]\nloose-greatdb_ha_port = 1\n");
        dir.write("conf.d/b.cnf", "[mysqld]\nb = 2\n");
        dir.write("conf.d/a.cnf", "[mysqld]\na = 1\n");
        dir.write("conf.d/c.txt", "[mysqld]\nc = 3\n");
        let f = read(&main).unwrap();
        assert_eq!(
            names(&f),
            [
                "mysqld.port=3306",
                "mysqld.greatdb_ha_port=1",
                "mysqld.socket=/tmp/s",
                "mysqld.a=1",
                "mysqld.b=2"
            ]
        );
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        assert_eq!(
            f.entries[1].origin.to_string(),
            format!("{}:2", dir.0.join("extra.cnf").display())
        );
    }

    #[test]
    fn include_loops_and_missing_files_warn() {
        let dir = TempDir::new("mycnf-loop");
        let a = dir.write(
            "a.cnf",
            "[mysqld]\na = 1\n!include b.cnf\n!include missing.cnf\n",
        );
        dir.write("b.cnf", "!include a.cnf\n[mysqld]\nb = 1\n!includedir .\n");
        let f = read(&a).unwrap();
        assert_eq!(names(&f), ["mysqld.a=1", "mysqld.b=1"]);
        assert_eq!(f.warnings.len(), 4, "{:#?}", f.warnings); // b→a, includedir → a and b, missing
        assert!(
            f.warnings
                .iter()
                .filter(|w| w.contains("include loop"))
                .count()
                == 3,
            "{:#?}",
            f.warnings
        );
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("cannot read included")),
            "{:#?}",
            f.warnings
        );
    }

    #[test]
    fn included_file_starts_outside_any_group() {
        let dir = TempDir::new("mycnf-group");
        let main = dir.write("my.cnf", "[mysqld3306]\n!include x.cnf\nafter = 1\n");
        dir.write("x.cnf", "orphan = 1\n");
        let f = read(&main).unwrap();
        assert_eq!(names(&f), ["mysqld3306.after=1"]);
        assert!(
            f.warnings[0].contains("option `orphan` outside any [group]"),
            "{:?}",
            f.warnings
        );
    }

    #[test]
    fn unreadable_top_file_is_an_error() {
        assert!(
            read(Path::new("/nonexistent/my.cnf"))
                .unwrap_err()
                .contains("cannot read /nonexistent/my.cnf")
        );
    }
}
