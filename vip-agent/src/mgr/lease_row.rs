//! The write lease's row in the group's database: its table, the statements that read
//! and commit it, and the decoding of what comes back (docs/coordination.md says why a
//! row the group commits is what fences a stale primary).
//!
//! One row (`id = 1`) in `vip_agent.write_lease`. Every commit is one autocommitted
//! statement that names the version it expects, so two agents that both think they
//! may take the lease cannot both succeed: MGR certifies one and the other matches no
//! row. Commits and the reads that follow a failed one run with
//! `group_replication_consistency = BEFORE`: a new primary first applies the old
//! primary's backlog, so it never takes the lease against a row it has not seen. On a
//! member without a majority the commit blocks; the caller bounds it with a timeout.
//!
//! The statements and the decoding are pure and tested without a server; [`read`] and
//! [`commit`] run them on a connection.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::query::{Cells, cells, clip, text};
use crate::core::{CommitError, LeaseOp, LeaseRow};

/// The table, as every statement names it.
pub const TABLE: &str = "vip_agent.write_lease";

/// What creates the table, once, on the primary (check-config prints it).
pub const CREATE: &str = "CREATE DATABASE IF NOT EXISTS vip_agent;
CREATE TABLE IF NOT EXISTS vip_agent.write_lease (
  id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
  holder VARCHAR(64) NOT NULL,
  term BIGINT UNSIGNED NOT NULL,
  renewals BIGINT UNSIGNED NOT NULL,
  settled BOOLEAN NOT NULL
) ENGINE=InnoDB;";

/// The privileges the agent's account needs on it.
pub fn grant(account: &str) -> String {
    format!("GRANT SELECT, INSERT, UPDATE ON {TABLE} TO {account};")
}

/// Reads the row (no row yet: an empty result).
pub const READ: &str =
    "SELECT holder, term, renewals, settled FROM vip_agent.write_lease WHERE id = 1";

/// Makes the session's next statements wait for the group's backlog (MySQL 8.0.14+).
pub const BEFORE: &str = "SET SESSION group_replication_consistency = 'BEFORE'";

/// The longest holder accepted: a member uuid (a server_uuid is 36 characters).
pub const MAX_HOLDER: usize = 64;

/// MySQL's errors a commit can meet, by what they mean to the lease.
const ER_DUP_ENTRY: u16 = 1062;
const ER_TABLEACCESS_DENIED: u16 = 1142;
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_BAD_DB: u16 = 1049;
const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;

/// The statement that commits `op` for holder `me`, and the row it makes if it matches
/// (`None`: a renewal, whose count only the server knows; it is read back).
pub fn statement(me: &str, op: &LeaseOp) -> Result<(String, Option<LeaseRow>), String> {
    check_holder(me)?;
    Ok(match op {
        LeaseOp::Take { expect: None } => (
            format!(
                "INSERT INTO {TABLE} (id, holder, term, renewals, settled) \
                 VALUES (1, '{me}', 1, 0, 0)"
            ),
            Some(taken(me, 1)),
        ),
        LeaseOp::Take {
            expect: Some((term, renewals)),
        } => {
            let next = term
                .checked_add(1)
                .ok_or_else(|| format!("the lease's term {term} cannot grow"))?;
            (
                format!(
                    "UPDATE {TABLE} SET holder = '{me}', term = {next}, renewals = 0, \
                     settled = 0 WHERE id = 1 AND term = {term} AND renewals = {renewals}"
                ),
                Some(taken(me, next)),
            )
        }
        LeaseOp::Renew { term, settled } => (
            format!(
                "UPDATE {TABLE} SET renewals = renewals + 1, settled = {} \
                 WHERE id = 1 AND holder = '{me}' AND term = {term}",
                u8::from(*settled)
            ),
            None,
        ),
    })
}

fn taken(me: &str, term: u64) -> LeaseRow {
    LeaseRow {
        holder: me.to_owned(),
        term,
        renewals: 0,
        settled: false,
    }
}

/// A holder goes into SQL text: letters, digits and dashes only, so it needs no quoting.
fn check_holder(me: &str) -> Result<(), String> {
    let ok = !me.is_empty()
        && me.len() <= MAX_HOLDER
        && me.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a member uuid (1 to {MAX_HOLDER} letters, digits and dashes)",
            clip(me)
        ))
    }
}

/// The row from [`READ`]'s result: `None` when there is none yet.
pub fn decode(rows: &[Cells]) -> Result<Option<LeaseRow>, String> {
    let row = match rows {
        [] => return Ok(None),
        [row] => row,
        _ => return Err(format!("{TABLE} returned {} rows for id 1", rows.len())),
    };
    let holder = text(row, 0, "holder")?.unwrap_or_default();
    check_holder(&holder).map_err(|e| format!("{TABLE}.holder: {e}"))?;
    let number = |i: usize, name: &str| -> Result<u64, String> {
        let s = text(row, i, name)?.ok_or_else(|| format!("{TABLE}.{name} is NULL"))?;
        s.parse()
            .map_err(|_| format!("{TABLE}.{name} is {:?}, not a count", clip(&s)))
    };
    let term = number(1, "term")?;
    if term == 0 {
        return Err(format!("{TABLE}.term is 0; terms start at 1"));
    }
    let renewals = number(2, "renewals")?;
    let settled = match number(3, "settled")? {
        0 => false,
        1 => true,
        n => return Err(format!("{TABLE}.settled is {n}, not 0 or 1")),
    };
    Ok(Some(LeaseRow {
        holder,
        term,
        renewals,
        settled,
    }))
}

/// Reads the row on `conn` (as the session's consistency level has it).
pub async fn read(conn: &mut Conn) -> Result<Option<LeaseRow>, String> {
    let rows: Vec<Row> = conn.query(READ).await.map_err(|e| explain(&e))?;
    decode(&cells(rows))
}

/// Commits `op` for holder `me` on `conn`: the row as committed, or why not. Sets the
/// session's consistency to BEFORE first. Unbounded on a member without a majority
/// (the group blocks the commit): the caller times it out and drops the connection.
pub async fn commit(conn: &mut Conn, me: &str, op: &LeaseOp) -> Result<LeaseRow, CommitError> {
    conn.query_drop(BEFORE)
        .await
        .map_err(|e| CommitError::Failed(explain(&e)))?;
    commit_in_session(conn, me, op).await
}

/// [`commit`] at whatever consistency the session has (a server without Group
/// Replication has no such setting).
pub async fn commit_in_session(
    conn: &mut Conn,
    me: &str,
    op: &LeaseOp,
) -> Result<LeaseRow, CommitError> {
    let (sql, made) = statement(me, op).map_err(CommitError::Failed)?;
    let failed = |e: mysql_async::Error| CommitError::Failed(explain(&e));
    match conn.query_drop(&sql).await {
        Ok(()) => {}
        Err(mysql_async::Error::Server(e)) if e.code == ER_DUP_ENTRY => {
            return Err(stale(conn).await);
        }
        Err(e) => return Err(failed(e)),
    }
    if conn.affected_rows() != 1 {
        return Err(stale(conn).await);
    }
    match made {
        Some(row) => Ok(row),
        // The session reads its own write.
        None => match read(conn).await.map_err(CommitError::Failed)? {
            Some(row) if row.holder == me => Ok(row),
            other => Err(CommitError::Failed(format!(
                "the renewal committed, but reading it back gave {other:?}"
            ))),
        },
    }
}

/// A commit that matched no row: the row as it is now, for the next attempt.
async fn stale(conn: &mut Conn) -> CommitError {
    match read(conn).await {
        Ok(current) => CommitError::Stale { current },
        Err(e) => CommitError::Failed(format!("the row changed, and reading it failed: {e}")),
    }
}

/// A server error, with what to do where the fix is known.
fn explain(e: &mysql_async::Error) -> String {
    let code = match e {
        mysql_async::Error::Server(s) => s.code,
        _ => return e.to_string(),
    };
    match code {
        ER_NO_SUCH_TABLE | ER_BAD_DB => {
            format!("{e}: the lease table does not exist; create it on the primary with:\n{CREATE}")
        }
        ER_TABLEACCESS_DENIED => format!(
            "{e}: the agent's account needs {}",
            grant("<the agent's account>")
        ),
        ER_OPTION_PREVENTS_STATEMENT => {
            format!("{e}: this member is read-only (not the group's primary)")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Value;

    const ME: &str = "00000000-0000-0000-0000-000000000001";

    fn cells(v: &[&str]) -> Cells {
        v.iter()
            .map(|s| Value::Bytes(s.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_first_take_inserts_term_one() {
        let (sql, made) = statement(ME, &LeaseOp::Take { expect: None }).unwrap();
        assert_eq!(
            sql,
            format!(
                "INSERT INTO vip_agent.write_lease (id, holder, term, renewals, settled) \
                 VALUES (1, '{ME}', 1, 0, 0)"
            )
        );
        assert_eq!(made, Some(taken(ME, 1)));
    }

    #[test]
    fn a_take_names_the_version_it_replaces() {
        let op = LeaseOp::Take {
            expect: Some((7, 3)),
        };
        let (sql, made) = statement(ME, &op).unwrap();
        assert!(
            sql.ends_with(
                "term = 8, renewals = 0, settled = 0 WHERE id = 1 AND term = 7 AND renewals = 3"
            ),
            "{sql}"
        );
        assert_eq!(made, Some(taken(ME, 8)));
        let top = LeaseOp::Take {
            expect: Some((u64::MAX, 0)),
        };
        assert!(statement(ME, &top).unwrap_err().contains("cannot grow"));
    }

    #[test]
    fn a_renewal_only_matches_its_own_term() {
        let op = LeaseOp::Renew {
            term: 4,
            settled: true,
        };
        let (sql, made) = statement(ME, &op).unwrap();
        assert_eq!(
            sql,
            format!(
                "UPDATE vip_agent.write_lease SET renewals = renewals + 1, settled = 1 \
                 WHERE id = 1 AND holder = '{ME}' AND term = 4"
            )
        );
        assert_eq!(made, None);
    }

    #[test]
    fn a_holder_that_could_break_the_statement_is_refused() {
        for bad in [
            "",
            "x'; DROP TABLE t; --",
            &"a".repeat(65),
            "uuid with space",
        ] {
            let err = statement(bad, &LeaseOp::Take { expect: None }).unwrap_err();
            assert!(err.contains("not a member uuid"), "{bad}: {err}");
        }
    }

    #[test]
    fn rows_decode_or_say_what_is_wrong() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(
            decode(&[cells(&[ME, "3", "12", "1"])]),
            Ok(Some(LeaseRow {
                holder: ME.into(),
                term: 3,
                renewals: 12,
                settled: true,
            }))
        );
        let bad = |row: Cells, want: &str| {
            let err = decode(&[row]).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        };
        bad(cells(&[ME, "0", "0", "0"]), "terms start at 1");
        bad(cells(&[ME, "-1", "0", "0"]), "term is \"-1\", not a count");
        bad(cells(&[ME, "1", "x", "0"]), "renewals");
        bad(cells(&[ME, "1", "0", "2"]), "settled is 2");
        bad(cells(&["a b", "1", "0", "0"]), "holder");
        bad(vec![Value::Bytes(ME.into()), Value::NULL], "term is NULL");
        bad(cells(&[ME, "1", "0"]), "settled is missing");
        let two = [cells(&[ME, "1", "0", "0"]), cells(&[ME, "1", "0", "0"])];
        assert!(decode(&two).unwrap_err().contains("2 rows"));
    }
}
