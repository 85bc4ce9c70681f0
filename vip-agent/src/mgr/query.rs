//! The statements of one poll, and the tolerant decoding of their results.
//!
//! Two plain text-protocol queries on the agent's one connection: the mode variables and
//! this server's uuid, then the member rows. Nothing is prepared, so a mysqld restart or
//! a proxy in between never leaves a stale statement behind. Every value is decoded by
//! hand: a NULL or an odd value becomes a clear [`ReadError::Malformed`], never a panic.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

/// One result row; a cell the server did not send is NULL.
pub(super) type Cells = Vec<Value>;

use super::{Member, MemberRole, MemberState};

/// The variables every poll needs. Unknown variables (error 1193) mean the
/// group_replication plugin is not loaded.
pub const VARIABLES: &str = "SELECT @@server_uuid, @@group_replication_single_primary_mode, \
     @@group_replication_enforce_update_everywhere_checks";

/// A group has at most 9 members (MySQL's limit for Group Replication).
pub const MAX_MEMBERS: usize = 9;

/// This member's view of the group, bounded by the server: one row more than a group
/// can have tells a result that cannot be a group's view from one that can.
pub const MEMBERS: &str = "SELECT MEMBER_ID, MEMBER_HOST, MEMBER_PORT, MEMBER_STATE, MEMBER_ROLE \
     FROM performance_schema.replication_group_members LIMIT 10";

/// The longest MEMBER_ID accepted (a server_uuid is 36 characters).
pub const MAX_MEMBER_ID: usize = 64;
/// The longest MEMBER_HOST accepted (report_host is at most 255 characters).
pub const MAX_MEMBER_HOST: usize = 255;

/// The error MySQL returns for an unknown system variable.
pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// What one poll read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub server_uuid: String,
    pub single_primary: bool,
    pub enforce_everywhere: bool,
    /// Every row; one that could not be read stands for a member that is not reachable
    /// ([`MemberState::Other`]), so it still counts in the view's size.
    pub members: Vec<Member>,
    /// What was wrong with each row that could not be read: the row, the member if its
    /// id could be read, and the cell.
    pub bad_rows: Vec<String>,
}

/// The state shown for a member whose row could not be read.
pub const UNREADABLE_ROW: &str = "UNREADABLE ROW";

#[derive(Debug)]
pub enum ReadError {
    /// The server or the connection failed.
    Sql(mysql_async::Error),
    /// The server answered with something this agent cannot read.
    Malformed(String),
}

impl From<mysql_async::Error> for ReadError {
    fn from(e: mysql_async::Error) -> Self {
        ReadError::Sql(e)
    }
}

/// Runs the poll's queries on `conn`.
pub async fn read(conn: &mut Conn) -> Result<View, ReadError> {
    let vars: Vec<Row> = conn.query(VARIABLES).await?;
    let members: Vec<Row> = conn.query(MEMBERS).await?;
    decode(&cells(vars), &cells(members)).map_err(ReadError::Malformed)
}

pub(super) fn cells(rows: Vec<Row>) -> Vec<Cells> {
    rows.into_iter()
        .map(|r| {
            r.unwrap_raw()
                .into_iter()
                .map(|v| v.unwrap_or(Value::NULL))
                .collect()
        })
        .collect()
}

/// Decodes the two results. Pure, so that every odd answer is tested without a server.
///
/// Only the variables and this member's own row can make the whole view unreadable:
/// another member's bad row makes that member count as not reachable (and is named in
/// [`View::bad_rows`]), so one odd cell elsewhere does not freeze every node's VIPs.
pub fn decode(vars: &[Cells], members: &[Cells]) -> Result<View, String> {
    let [row] = vars else {
        return Err(format!(
            "the variables query returned {} rows instead of 1",
            vars.len()
        ));
    };
    let server_uuid = text(row, 0, "@@server_uuid")?.unwrap_or_default();
    let single_primary = flag(row, 1, "@@group_replication_single_primary_mode")?;
    let enforce_everywhere = flag(
        row,
        2,
        "@@group_replication_enforce_update_everywhere_checks",
    )?;
    if members.len() > MAX_MEMBERS {
        return Err(format!(
            "replication_group_members has more than {MAX_MEMBERS} rows, and a group has at \
             most {MAX_MEMBERS} members"
        ));
    }
    let mut view = View {
        server_uuid,
        single_primary,
        enforce_everywhere,
        members: Vec::with_capacity(members.len()),
        bad_rows: Vec::new(),
    };
    for (i, row) in members.iter().enumerate() {
        match member(row) {
            Ok(m) => view.members.push(m),
            Err(e) => {
                let id = member_id(row).ok().filter(|id| !id.is_empty());
                let own = id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&view.server_uuid));
                if own {
                    return Err(format!(
                        "replication_group_members row {} (this member's own row): {e}",
                        i + 1
                    ));
                }
                let who = id.clone().unwrap_or_else(|| "a member".to_string());
                view.bad_rows.push(format!(
                    "replication_group_members row {} ({who}): {e}; that member counts as not \
                     reachable",
                    i + 1
                ));
                view.members.push(Member {
                    uuid: id.unwrap_or_default(),
                    host: String::new(),
                    port: None,
                    state: MemberState::Other(UNREADABLE_ROW.into()),
                    role: None,
                });
            }
        }
    }
    Ok(view)
}

fn member(row: &Cells) -> Result<Member, String> {
    let uuid = member_id(row)?;
    let host = text(row, 1, "MEMBER_HOST")?.unwrap_or_default();
    let control = host.chars().any(char::is_control);
    if host.len() > MAX_MEMBER_HOST || control {
        return Err(format!(
            "MEMBER_HOST is not a host name ({} bytes{})",
            host.len(),
            if control {
                ", with control characters"
            } else {
                ""
            }
        ));
    }
    let port = port(row, 2)?;
    let state = text(row, 3, "MEMBER_STATE")?.unwrap_or_default();
    let role = text(row, 4, "MEMBER_ROLE")?.unwrap_or_default();
    Ok(Member {
        uuid,
        host,
        port,
        state: MemberState::parse(&state),
        role: MemberRole::parse(&role),
    })
}

/// MEMBER_ID: empty (the plugin never started), or a uuid-like id of letters, digits
/// and dashes; it goes into peer frames and log lines.
fn member_id(row: &Cells) -> Result<String, String> {
    let id = text(row, 0, "MEMBER_ID")?.unwrap_or_default();
    if id.len() > MAX_MEMBER_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "MEMBER_ID is not a member uuid ({} bytes; at most {MAX_MEMBER_ID} letters, digits \
             and dashes)",
            id.len()
        ));
    }
    Ok(id)
}

fn value<'a>(row: &'a Cells, i: usize, name: &str) -> Result<&'a Value, String> {
    row.get(i)
        .ok_or_else(|| format!("{name} is missing from the result"))
}

/// A string column; NULL is `None`.
pub(super) fn text(row: &Cells, i: usize, name: &str) -> Result<Option<String>, String> {
    match value(row, i, name)? {
        Value::NULL => Ok(None),
        Value::Bytes(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| format!("{name} is not UTF-8")),
        Value::Int(n) => Ok(Some(n.to_string())),
        Value::UInt(n) => Ok(Some(n.to_string())),
        other => Err(format!(
            "{name} has an unexpected value ({})",
            kind_of(other)
        )),
    }
}

/// A value as quoted in an error message: at most 40 characters of it.
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// What kind of value a cell holds, for an error message. Never the value's own Debug
/// text: mysql_common's overflows on an out-of-range TIME (found by the fuzzer).
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::NULL => "NULL",
        Value::Bytes(_) => "a string",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) | Value::Double(_) => "a floating-point number",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    }
}

/// A boolean variable, as MySQL shows it: 1/0, or ON/OFF.
fn flag(row: &Cells, i: usize, name: &str) -> Result<bool, String> {
    match text(row, i, name)?
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("1" | "ON") => Ok(true),
        Some("0" | "OFF") => Ok(false),
        Some(other) => Err(format!(
            "{name} is {:?}, expected 1/0 or ON/OFF",
            clip(other)
        )),
        None => Err(format!("{name} is NULL")),
    }
}

/// MEMBER_PORT: NULL while the plugin never started.
fn port(row: &Cells, i: usize) -> Result<Option<u16>, String> {
    match text(row, i, "MEMBER_PORT")? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("MEMBER_PORT is {:?}, not a port number", clip(&s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Vec<Value>) -> Cells {
        values
    }

    fn s(v: &str) -> Value {
        Value::Bytes(v.as_bytes().to_vec())
    }

    fn vars(uuid: &str, single: &str, everywhere: &str) -> Vec<Cells> {
        vec![row(vec![s(uuid), s(single), s(everywhere)])]
    }

    #[test]
    fn decodes_a_view() {
        let members = vec![
            row(vec![
                s("u1"),
                s("db1"),
                s("3306"),
                s("ONLINE"),
                s("PRIMARY"),
            ]),
            row(vec![
                s("u2"),
                s("db2"),
                Value::Int(3306),
                s("RECOVERING"),
                s(""),
            ]),
        ];
        let view = decode(&vars("u1", "1", "OFF"), &members).unwrap();
        assert_eq!(view.server_uuid, "u1");
        assert!(view.single_primary);
        assert!(!view.enforce_everywhere);
        assert_eq!(view.members[0].role, Some(MemberRole::Primary));
        assert_eq!(view.members[1].state, MemberState::Recovering);
        assert_eq!(view.members[1].role, None);
        assert_eq!(view.members[1].port, Some(3306));
    }

    #[test]
    fn null_port_is_accepted_null_mode_is_not() {
        let members = vec![row(vec![s(""), s(""), Value::NULL, s("OFFLINE"), s("")])];
        let view = decode(&vars("u1", "ON", "0"), &members).unwrap();
        assert_eq!(view.members[0].port, None);
        let bad = vec![row(vec![s("u1"), Value::NULL, s("0")])];
        let err = decode(&bad, &[]).unwrap_err();
        assert!(err.contains("single_primary_mode is NULL"), "{err}");
    }

    #[test]
    fn odd_values_are_named() {
        let err = decode(&vars("u1", "maybe", "0"), &[]).unwrap_err();
        assert!(err.contains("\"MAYBE\""), "{err}");
        let members = vec![row(vec![
            s("u1"),
            s("db1"),
            s("99999"),
            s("ONLINE"),
            s("PRIMARY"),
        ])];
        let err = decode(&vars("u1", "1", "0"), &members).unwrap_err();
        assert!(
            err.contains("row 1") && err.contains("MEMBER_PORT"),
            "{err}"
        );
        let short = vec![row(vec![s("u1"), s("db1")])];
        let err = decode(&vars("u1", "1", "0"), &short).unwrap_err();
        assert!(err.contains("MEMBER_PORT is missing"), "{err}");
        let err = decode(&[], &[]).unwrap_err();
        assert!(err.contains("0 rows"), "{err}");
    }

    fn good(uuid: &str) -> Cells {
        row(vec![
            s(uuid),
            s("db"),
            s("3306"),
            s("ONLINE"),
            s("SECONDARY"),
        ])
    }

    #[test]
    fn another_members_bad_row_only_makes_it_unreachable() {
        let bad_cells: Vec<(Cells, &str)> = vec![
            (
                row(vec![
                    s("u3"),
                    Value::Bytes(vec![0xff, 0xfe]),
                    s("3306"),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_HOST is not UTF-8",
            ),
            (
                row(vec![
                    s("u3"),
                    s("db3"),
                    s("70000"),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_PORT is \"70000\"",
            ),
            (
                row(vec![
                    s("u3"),
                    s("db3\nforged"),
                    s("3306"),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_HOST is not a host name (10 bytes, with control characters)",
            ),
            (
                row(vec![
                    s("u3"),
                    s("db3"),
                    Value::Float(1.5),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_PORT has an unexpected value",
            ),
            (
                row(vec![
                    s(&"u".repeat(65)),
                    s("db3"),
                    s("3306"),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_ID is not a member uuid (65 bytes",
            ),
            (row(vec![s("u3"), s("db3")]), "MEMBER_PORT is missing"),
            (
                // Found by the fuzzer: formatting this TIME overflowed inside mysql_common.
                row(vec![
                    s("u3"),
                    s("db3"),
                    Value::Time(false, u32::MAX, 0, 0, 0, 0),
                    s("ONLINE"),
                    s("SECONDARY"),
                ]),
                "MEMBER_PORT has an unexpected value (a time)",
            ),
        ];
        for (bad, cell) in bad_cells {
            let members = vec![good("u1"), good("u2"), bad];
            let view = decode(&vars("u1", "1", "0"), &members).unwrap();
            assert_eq!(view.members.len(), 3);
            assert_eq!(
                view.members[2].state,
                MemberState::Other(UNREADABLE_ROW.into())
            );
            assert!(!view.members[2].state.counts_for_quorum());
            let [why] = view.bad_rows.as_slice() else {
                panic!("{:?}", view.bad_rows)
            };
            assert!(
                why.starts_with("replication_group_members row 3 ("),
                "{why}"
            );
            assert!(why.contains(cell), "{cell}: {why}");
            assert!(
                why.ends_with("that member counts as not reachable"),
                "{why}"
            );
        }
        // The same in this member's own row: nothing can be known.
        let own_bad = row(vec![
            s("U1"),
            s("db1"),
            s("70000"),
            s("ONLINE"),
            s("PRIMARY"),
        ]);
        let err = decode(&vars("u1", "1", "0"), &[own_bad, good("u2")]).unwrap_err();
        assert!(
            err.contains("row 1 (this member's own row): MEMBER_PORT"),
            "{err}"
        );
    }

    #[test]
    fn more_rows_than_a_group_can_have_are_refused() {
        let members: Vec<Cells> = (0..=MAX_MEMBERS).map(|i| good(&format!("u{i}"))).collect();
        let err = decode(&vars("u0", "1", "0"), &members).unwrap_err();
        assert!(err.contains("more than 9 rows"), "{err}");
        assert!(decode(&vars("u0", "1", "0"), &members[..MAX_MEMBERS]).is_ok());
        assert!(MEMBERS.ends_with("LIMIT 10"));
    }
}
