//! The one user table a simulated member has: `vip_agent.write_lease`, where the agents
//! keep their write lease (its DDL: `vip_agent::mgr::lease_row::CREATE`).
//!
//! Pure: the statements on it, parsed (`parse_select`, `parse_insert`,
//! `parse_update`) and evaluated against the row. Understood, as MySQL would run them:
//! - `SELECT <columns> FROM vip_agent.write_lease [WHERE <column> = <literal> [AND …]]`
//! - `INSERT INTO vip_agent.write_lease (<columns>) VALUES (<literals>)`
//! - `UPDATE vip_agent.write_lease SET <column> = <literal> | <column> + <integer> [, …]
//!   [WHERE <column> = <literal> [AND …]]`
//!
//! Where the group's rules come in (who may commit, who sees which row) is the world's
//! business (`state.rs`).

use super::sql::{Kind, Parser, SqlError, Table, Tok, Value};

pub const SCHEMA: &str = "vip_agent";
pub const NAME: &str = "write_lease";

/// The table's columns, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Id,
    Holder,
    Term,
    Renewals,
    Settled,
}

impl Col {
    const ALL: [Col; 5] = [Col::Id, Col::Holder, Col::Term, Col::Renewals, Col::Settled];

    fn name(self) -> &'static str {
        match self {
            Col::Id => "id",
            Col::Holder => "holder",
            Col::Term => "term",
            Col::Renewals => "renewals",
            Col::Settled => "settled",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Col::Holder => Kind::Str,
            _ => Kind::Int,
        }
    }
}

/// A row of the table (the primary key `id`, and the lease's fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub holder: String,
    pub term: i64,
    pub renewals: i64,
    pub settled: i64,
}

impl Row {
    fn get(&self, c: Col) -> Value {
        match c {
            Col::Id => Value::Int(self.id),
            Col::Holder => Value::Str(self.holder.clone()),
            Col::Term => Value::Int(self.term),
            Col::Renewals => Value::Int(self.renewals),
            Col::Settled => Value::Int(self.settled),
        }
    }

    fn set(&mut self, c: Col, v: &Value) -> Result<(), SqlError> {
        let int = |v: &Value| match v {
            Value::Int(n) => Ok(*n),
            Value::Str(s) => s.trim().parse().map_err(|_| truncated(c, s)),
            Value::Null => Err(SqlError::NullColumn(c.name())),
        };
        match c {
            Col::Holder => match v {
                Value::Str(s) => self.holder = s.clone(),
                Value::Int(n) => self.holder = n.to_string(),
                Value::Null => return Err(SqlError::NullColumn(c.name())),
            },
            Col::Id => self.id = int(v)?,
            Col::Term => self.term = int(v)?,
            Col::Renewals => self.renewals = int(v)?,
            Col::Settled => self.settled = int(v)?,
        }
        Ok(())
    }
}

fn truncated(c: Col, s: &str) -> SqlError {
    SqlError::Syntax(format!(
        "Incorrect integer value: '{s}' for column '{}'",
        c.name()
    ))
}

/// A value to assign: a literal, or a column plus an integer (`renewals = renewals + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assign {
    Literal(Value),
    Plus(Col, i64),
}

/// A statement on the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStmt {
    Select {
        columns: Vec<Col>,
        filter: Vec<(Col, Value)>,
    },
    Insert(Row),
    Update {
        set: Vec<(Col, Assign)>,
        filter: Vec<(Col, Value)>,
    },
}

impl LeaseStmt {
    pub fn writes(&self) -> bool {
        !matches!(self, LeaseStmt::Select { .. })
    }

    /// The result columns of a SELECT.
    pub fn columns(&self) -> Vec<(String, Kind)> {
        match self {
            LeaseStmt::Select { columns, .. } => columns
                .iter()
                .map(|c| (c.name().to_owned(), c.kind()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A SELECT's result from the row a member has.
    pub fn select(&self, row: Option<&Row>) -> Table {
        let LeaseStmt::Select { columns, filter } = self else {
            unreachable!("select() on a write")
        };
        let rows = row
            .filter(|r| matches(r, filter))
            .map(|r| columns.iter().map(|c| r.get(*c)).collect())
            .into_iter()
            .collect();
        Table {
            columns: self.columns(),
            rows,
        }
    }

    /// A write applied to the committed row: the new row and the rows affected.
    pub fn apply(&self, row: Option<&Row>) -> Result<(Option<Row>, u64), SqlError> {
        match self {
            LeaseStmt::Select { .. } => Ok((row.cloned(), 0)),
            LeaseStmt::Insert(new) => match row {
                Some(old) if old.id == new.id => Err(SqlError::DupEntry(old.id.to_string())),
                _ => Ok((Some(new.clone()), 1)),
            },
            LeaseStmt::Update { set, filter } => match row {
                Some(old) if matches(old, filter) => {
                    let mut new = old.clone();
                    for (c, a) in set {
                        let v = match a {
                            Assign::Literal(v) => v.clone(),
                            Assign::Plus(src, n) => match old.get(*src) {
                                Value::Int(x) => Value::Int(x + n),
                                other => other,
                            },
                        };
                        new.set(*c, &v)?;
                    }
                    // MySQL counts changed rows, not matched ones, by default.
                    let changed = u64::from(new != *old);
                    Ok((Some(new), changed))
                }
                _ => Ok((row.cloned(), 0)),
            },
        }
    }
}

fn matches(row: &Row, filter: &[(Col, Value)]) -> bool {
    filter
        .iter()
        .all(|(c, v)| super::sql::sql_eq(&row.get(*c), v))
}

// ----- parsing (the leading keyword already taken) -----

impl Parser<'_> {
    /// `vip_agent.write_lease`; anything else does not exist.
    fn lease_table(&mut self) -> Result<(), SqlError> {
        let first = self.ident().ok_or_else(|| self.syntax_error())?;
        if !self.punct('.') {
            return Err(SqlError::NoDatabase);
        }
        let table = self.ident().ok_or_else(|| self.syntax_error())?;
        if first.eq_ignore_ascii_case(SCHEMA) && table.eq_ignore_ascii_case(NAME) {
            Ok(())
        } else {
            Err(SqlError::NoSuchTable(format!("{first}.{table}")))
        }
    }

    fn lease_col(&mut self, clause: &'static str) -> Result<Col, SqlError> {
        let name = self.ident().ok_or_else(|| self.syntax_error())?;
        Col::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(&name))
            .ok_or(SqlError::UnknownColumn { name, clause })
    }

    fn literal(&mut self) -> Result<Value, SqlError> {
        let v = match self.peek() {
            Some(Tok::Int(n, _)) => Value::Int(*n),
            Some(Tok::Str(s)) => Value::Str(s.clone()),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NULL") => Value::Null,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("TRUE") => Value::Int(1),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("FALSE") => Value::Int(0),
            _ => return Err(self.syntax_error()),
        };
        self.pos += 1;
        Ok(v)
    }

    fn lease_where(&mut self) -> Result<Vec<(Col, Value)>, SqlError> {
        let mut filter = Vec::new();
        if self.keyword("WHERE") {
            loop {
                let c = self.lease_col("where clause")?;
                if !self.punct('=') {
                    return Err(self.syntax_error());
                }
                filter.push((c, self.literal()?));
                if !self.keyword("AND") {
                    break;
                }
            }
        }
        self.end()?;
        Ok(filter)
    }

    fn end(&self) -> Result<(), SqlError> {
        if self.pos == self.toks.len() {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }
}

/// After `SELECT`, when the FROM names the lease table.
pub(super) fn parse_select(p: &mut Parser<'_>) -> Result<LeaseStmt, SqlError> {
    let mut names = Vec::new();
    if p.punct('*') {
        names = Col::ALL.map(|c| c.name().to_owned()).to_vec();
    } else {
        loop {
            names.push(p.ident().ok_or_else(|| p.syntax_error())?);
            if !p.punct(',') {
                break;
            }
        }
    }
    if !p.keyword("FROM") {
        return Err(p.syntax_error());
    }
    p.lease_table()?;
    let filter = p.lease_where()?;
    let columns = names
        .into_iter()
        .map(|name| {
            Col::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(&name))
                .ok_or(SqlError::UnknownColumn {
                    name,
                    clause: "field list",
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(LeaseStmt::Select { columns, filter })
}

/// After `INSERT`.
pub(super) fn parse_insert(p: &mut Parser<'_>) -> Result<LeaseStmt, SqlError> {
    if !p.keyword("INTO") {
        return Err(p.syntax_error());
    }
    p.lease_table()?;
    let mut cols = Vec::new();
    if !p.punct('(') {
        return Err(p.syntax_error());
    }
    loop {
        cols.push(p.lease_col("field list")?);
        if !p.punct(',') {
            break;
        }
    }
    if !p.punct(')') || !p.keyword("VALUES") || !p.punct('(') {
        return Err(p.syntax_error());
    }
    let mut values = Vec::new();
    loop {
        values.push(p.literal()?);
        if !p.punct(',') {
            break;
        }
    }
    if !p.punct(')') {
        return Err(p.syntax_error());
    }
    p.end()?;
    if values.len() != cols.len() {
        return Err(SqlError::ColumnCount);
    }
    // Every column is NOT NULL without a default: all of them must be given.
    if let Some(missing) = Col::ALL.into_iter().find(|c| !cols.contains(c)) {
        return Err(SqlError::NoDefault(missing.name()));
    }
    let mut row = Row {
        id: 0,
        holder: String::new(),
        term: 0,
        renewals: 0,
        settled: 0,
    };
    for (c, v) in cols.iter().zip(&values) {
        row.set(*c, v)?;
    }
    Ok(LeaseStmt::Insert(row))
}

/// After `UPDATE`.
pub(super) fn parse_update(p: &mut Parser<'_>) -> Result<LeaseStmt, SqlError> {
    p.lease_table()?;
    if !p.keyword("SET") {
        return Err(p.syntax_error());
    }
    let mut set = Vec::new();
    loop {
        let c = p.lease_col("field list")?;
        if !p.punct('=') {
            return Err(p.syntax_error());
        }
        let assign = if matches!(p.peek(), Some(Tok::Word(w)) if !is_literal_word(w)) {
            let src = p.lease_col("field list")?;
            if !p.punct('+') {
                return Err(p.syntax_error());
            }
            match p.literal()? {
                Value::Int(n) => Assign::Plus(src, n),
                _ => return Err(p.syntax_error()),
            }
        } else {
            Assign::Literal(p.literal()?)
        };
        set.push((c, assign));
        if !p.punct(',') {
            break;
        }
    }
    let filter = p.lease_where()?;
    Ok(LeaseStmt::Update { set, filter })
}

fn is_literal_word(w: &str) -> bool {
    ["NULL", "TRUE", "FALSE"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::sql::{Statement, parse};
    use vip_agent::core::LeaseOp;
    use vip_agent::mgr::lease_row;

    const ME: &str = "00000000-0000-0000-0000-000000000001";

    fn stmt(sql: &str) -> LeaseStmt {
        match parse(sql) {
            Ok(Statement::Lease(s)) => s,
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// The agent's own statements, run in order as the group would commit them.
    #[test]
    fn the_agents_statements_take_and_renew_the_row() {
        let exec = |row: Option<Row>, op: &LeaseOp| {
            let (sql, _) = lease_row::statement(ME, op).unwrap();
            stmt(&sql).apply(row.as_ref())
        };
        let (row, n) = exec(None, &LeaseOp::Take { expect: None }).unwrap();
        assert_eq!(n, 1);
        let again = exec(row.clone(), &LeaseOp::Take { expect: None });
        assert_eq!(again.unwrap_err().code(), 1062);
        let renew = LeaseOp::Renew {
            term: 1,
            settled: true,
        };
        let (row, n) = exec(row, &renew).unwrap();
        assert_eq!(n, 1);
        let r = row.clone().unwrap();
        assert_eq!((r.term, r.renewals, r.settled), (1, 1, 1));
        // A take expecting an old version matches nothing.
        let stale = LeaseOp::Take {
            expect: Some((1, 0)),
        };
        let (same, n) = exec(row.clone(), &stale).unwrap();
        assert_eq!((same, n), (row.clone(), 0));
        let take = LeaseOp::Take {
            expect: Some((1, 1)),
        };
        let (row, n) = exec(row, &take).unwrap();
        assert_eq!(n, 1);
        assert_eq!(row.as_ref().map(|r| (r.term, r.renewals)), Some((2, 0)));
        // The agent's read decodes what the table returns.
        let table = stmt(lease_row::READ).select(row.as_ref());
        let cols: Vec<_> = table.columns.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(cols, ["holder", "term", "renewals", "settled"]);
        assert_eq!(table.rows.len(), 1);
    }

    #[test]
    fn errors_are_mysqls() {
        let err = |sql: &str| parse(sql).unwrap_err().code();
        assert_eq!(err("SELECT holder FROM vip_agent.nope"), 1146);
        assert_eq!(err("SELECT colour FROM vip_agent.write_lease"), 1054);
        assert_eq!(err("UPDATE vip_agent.write_lease SET colour = 1"), 1054);
        assert_eq!(
            err("INSERT INTO vip_agent.write_lease (id) VALUES (1, 2)"),
            1136
        );
        assert_eq!(
            err("INSERT INTO vip_agent.write_lease (id) VALUES (1)"),
            1364
        );
        assert_eq!(
            err("UPDATE vip_agent.write_lease SET term = term - 1"),
            1064
        );
    }
}
