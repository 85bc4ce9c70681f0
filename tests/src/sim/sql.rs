//! Recognising the few statements a simulated member answers, and evaluating them.
//!
//! Pure: [`parse`] turns text into a [`Statement`] or the MySQL error a real server would
//! give, and [`Select::evaluate`] computes the result from a [`Source`] (one member's
//! rows and variables). Understood:
//! - `SET …` (accepted and ignored);
//! - `SELECT <items> [FROM performance_schema.replication_group_members]
//!   [WHERE <a> = <b> [AND …]] [LIMIT <n>] [;]`, where an item is `*` (with FROM only), a column of
//!   that table, a system variable (`@@name`, `@@global.name`, `@@session.name`) or a
//!   number or string literal, each with an optional `[AS] alias`.
//!
//! Keywords, column and variable names are case-insensitive, as in MySQL; a column keeps
//! the label it was written with.

use std::fmt;

use super::lease_table::{self, LeaseStmt};
use super::model::MemberRow;

/// A value in a result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Str(String),
}

/// The declared type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Str,
}

/// A column of performance_schema.replication_group_members (MySQL 8.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    ChannelName,
    MemberId,
    MemberHost,
    MemberPort,
    MemberState,
    MemberRole,
    MemberVersion,
    MemberCommunicationStack,
}

impl Column {
    /// In table order, for `SELECT *`.
    pub const ALL: [Column; 8] = [
        Column::ChannelName,
        Column::MemberId,
        Column::MemberHost,
        Column::MemberPort,
        Column::MemberState,
        Column::MemberRole,
        Column::MemberVersion,
        Column::MemberCommunicationStack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::ChannelName => "CHANNEL_NAME",
            Column::MemberId => "MEMBER_ID",
            Column::MemberHost => "MEMBER_HOST",
            Column::MemberPort => "MEMBER_PORT",
            Column::MemberState => "MEMBER_STATE",
            Column::MemberRole => "MEMBER_ROLE",
            Column::MemberVersion => "MEMBER_VERSION",
            Column::MemberCommunicationStack => "MEMBER_COMMUNICATION_STACK",
        }
    }

    fn from_name(name: &str) -> Option<Column> {
        Column::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    fn kind(self) -> Kind {
        match self {
            Column::MemberPort => Kind::Int,
            _ => Kind::Str,
        }
    }

    pub fn value(self, row: &MemberRow) -> Value {
        let s = |s: &str| Value::Str(s.to_owned());
        match self {
            Column::ChannelName => s(&row.channel_name),
            Column::MemberId => s(&row.member_id),
            Column::MemberHost => s(&row.member_host),
            Column::MemberPort => row
                .member_port
                .map_or(Value::Null, |p| Value::Int(p.into())),
            Column::MemberState => s(row.member_state.as_str()),
            Column::MemberRole => s(row.member_role.map_or("", |r| r.as_str())),
            Column::MemberVersion => s(&row.member_version),
            Column::MemberCommunicationStack => s(&row.member_communication_stack),
        }
    }
}

/// A system variable a member knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    ServerUuid,
    SinglePrimaryMode,
    EnforceUpdateEverywhereChecks,
    MemberWeight,
    SuperReadOnly,
    ReadOnly,
    Port,
    ReportHost,
    Hostname,
    Version,
    MaxAllowedPacket,
    WaitTimeout,
    Socket,
}

impl Var {
    const ALL: [Var; 13] = [
        Var::ServerUuid,
        Var::SinglePrimaryMode,
        Var::EnforceUpdateEverywhereChecks,
        Var::MemberWeight,
        Var::SuperReadOnly,
        Var::ReadOnly,
        Var::Port,
        Var::ReportHost,
        Var::Hostname,
        Var::Version,
        Var::MaxAllowedPacket,
        Var::WaitTimeout,
        Var::Socket,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::ServerUuid => "server_uuid",
            Var::SinglePrimaryMode => "group_replication_single_primary_mode",
            Var::EnforceUpdateEverywhereChecks => {
                "group_replication_enforce_update_everywhere_checks"
            }
            Var::MemberWeight => "group_replication_member_weight",
            Var::SuperReadOnly => "super_read_only",
            Var::ReadOnly => "read_only",
            Var::Port => "port",
            Var::ReportHost => "report_host",
            Var::Hostname => "hostname",
            Var::Version => "version",
            Var::MaxAllowedPacket => "max_allowed_packet",
            Var::WaitTimeout => "wait_timeout",
            Var::Socket => "socket",
        }
    }

    fn from_name(name: &str) -> Option<Var> {
        Var::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(name))
    }

    /// Variables that exist only while the group_replication plugin is loaded.
    pub fn needs_plugin(self) -> bool {
        self.name().starts_with("group_replication_")
    }

    fn kind(self) -> Kind {
        match self {
            Var::ServerUuid | Var::ReportHost | Var::Hostname | Var::Version | Var::Socket => {
                Kind::Str
            }
            _ => Kind::Int,
        }
    }
}

/// An expression in a select list or a WHERE condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Column(Column),
    Var(Var),
    Literal(Value),
}

impl Expr {
    fn kind(&self) -> Kind {
        match self {
            Expr::Column(c) => c.kind(),
            Expr::Var(v) => v.kind(),
            Expr::Literal(Value::Int(_)) => Kind::Int,
            Expr::Literal(_) => Kind::Str,
        }
    }
}

/// One output column: what to compute and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub expr: Expr,
    pub label: String,
}

/// A recognised SELECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub items: Vec<Item>,
    /// FROM performance_schema.replication_group_members (one output row per member row).
    pub from_members: bool,
    /// WHERE: all these equalities hold.
    pub filter: Vec<(Expr, Expr)>,
    /// LIMIT: at most this many rows.
    pub limit: Option<u64>,
}

/// A recognised statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Any other `SET`: answered OK.
    Set,
    /// `SET [SESSION] group_replication_consistency = '<level>'`.
    Consistency(String),
    Select(Select),
    /// A statement on the lease table.
    Lease(LeaseStmt),
}

/// The error a real server would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    Empty,
    /// The text from where parsing failed.
    Syntax(String),
    UnknownVariable(String),
    NoDatabase,
    NoSuchTable(String),
    NoTables,
    UnknownColumn {
        name: String,
        clause: &'static str,
    },
    /// The primary key's value.
    DupEntry(String),
    ColumnCount,
    NoDefault(&'static str),
    NullColumn(&'static str),
    /// A write on a member with super_read_only (a secondary, or out of the group).
    ReadOnly,
    /// A blocked commit whose member left the group meanwhile.
    Rollback,
}

impl SqlError {
    /// The MySQL error number.
    pub fn code(&self) -> u16 {
        match self {
            SqlError::Empty => 1065,
            SqlError::Syntax(_) => 1064,
            SqlError::UnknownVariable(_) => 1193,
            SqlError::NoDatabase => 1046,
            SqlError::NoSuchTable(_) => 1146,
            SqlError::NoTables => 1096,
            SqlError::UnknownColumn { .. } => 1054,
            SqlError::DupEntry(_) => 1062,
            SqlError::ColumnCount => 1136,
            SqlError::NoDefault(_) => 1364,
            SqlError::NullColumn(_) => 1048,
            SqlError::ReadOnly => 1290,
            SqlError::Rollback => 3101,
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlError::Empty => write!(f, "Query was empty"),
            SqlError::Syntax(near) => write!(
                f,
                "You have an error in your SQL syntax; check the manual that corresponds to \
                 your MySQL server version for the right syntax to use near '{near}' at line 1 \
                 (the MGR simulator understands only SET, SELECT of system variables, \
                 SELECT from performance_schema.replication_group_members, and SELECT, \
                 INSERT and UPDATE on vip_agent.write_lease)"
            ),
            SqlError::UnknownVariable(name) => write!(f, "Unknown system variable '{name}'"),
            SqlError::NoDatabase => write!(f, "No database selected"),
            SqlError::NoSuchTable(name) => write!(f, "Table '{name}' doesn't exist"),
            SqlError::NoTables => write!(f, "No tables used"),
            SqlError::UnknownColumn { name, clause } => {
                write!(f, "Unknown column '{name}' in '{clause}'")
            }
            SqlError::DupEntry(key) => {
                write!(f, "Duplicate entry '{key}' for key 'write_lease.PRIMARY'")
            }
            SqlError::ColumnCount => write!(f, "Column count doesn't match value count at row 1"),
            SqlError::NoDefault(c) => write!(f, "Field '{c}' doesn't have a default value"),
            SqlError::NullColumn(c) => write!(f, "Column '{c}' cannot be null"),
            SqlError::ReadOnly => write!(
                f,
                "The MySQL server is running with the --super-read-only option so it cannot \
                 execute this statement"
            ),
            SqlError::Rollback => write!(
                f,
                "Plugin instructed the server to rollback the current transaction."
            ),
        }
    }
}

impl std::error::Error for SqlError {}

/// One member's answers: its replication_group_members rows and its variables.
pub trait Source {
    fn rows(&self) -> Vec<MemberRow>;
    fn var(&self, var: Var) -> Result<Value, SqlError>;
    /// The value of `column` in `row`.
    fn cell(&self, row: &MemberRow, column: Column) -> Value {
        column.value(row)
    }
}

/// A result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<(String, Kind)>,
    pub rows: Vec<Vec<Value>>,
}

impl Select {
    /// The result columns: labels and declared types.
    pub fn columns(&self) -> Vec<(String, Kind)> {
        self.items
            .iter()
            .map(|i| (i.label.clone(), i.expr.kind()))
            .collect()
    }

    /// The result set `source` gives for this query.
    pub fn evaluate(&self, source: &impl Source) -> Result<Table, SqlError> {
        let rows: Vec<Option<MemberRow>> = if self.from_members {
            source.rows().into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let eval = |expr: &Expr, row: Option<&MemberRow>| -> Result<Value, SqlError> {
            match expr {
                Expr::Column(c) => Ok(row.map_or(Value::Null, |r| source.cell(r, *c))),
                Expr::Var(v) => source.var(*v),
                Expr::Literal(v) => Ok(v.clone()),
            }
        };
        let mut out = Vec::new();
        for row in &rows {
            let mut keep = true;
            for (a, b) in &self.filter {
                keep &= sql_eq(&eval(a, row.as_ref())?, &eval(b, row.as_ref())?);
            }
            if keep && self.limit.is_none_or(|n| (out.len() as u64) < n) {
                let values = self.items.iter().map(|i| eval(&i.expr, row.as_ref()));
                out.push(values.collect::<Result<Vec<_>, _>>()?);
            }
        }
        // A variable that does not exist fails the query even when no row matches.
        for item in &self.items {
            if let Expr::Var(v) = item.expr {
                source.var(v)?;
            }
        }
        Ok(Table {
            columns: self.columns(),
            rows: out,
        })
    }
}

/// `=` as MySQL compares with its default case-insensitive collation; NULL never matches.
pub(super) fn sql_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x.eq_ignore_ascii_case(y),
        (Value::Int(i), Value::Str(s)) | (Value::Str(s), Value::Int(i)) => {
            s.trim().parse::<i64>() == Ok(*i)
        }
    }
}

// ----- lexing -----

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// Unquoted identifier or keyword.
    Word(String),
    /// `backticked` identifier.
    Quoted(String),
    /// `@@[scope.]name`, with the text as written.
    SysVar {
        name: String,
        text: String,
    },
    Str(String),
    Int(i64, String),
    Punct(char),
}

fn lex(sql: &str) -> Result<Vec<(Tok, usize)>, SqlError> {
    let bytes = sql.as_bytes();
    let near = |at: usize| SqlError::Syntax(near_text(sql, at));
    let word_end = |from: usize| {
        from + bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$')
            .count()
    };
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if sql[i..].starts_with("/*") {
            i = sql[i + 2..]
                .find("*/")
                .map(|e| i + 2 + e + 2)
                .ok_or_else(|| near(i))?;
        } else if sql[i..].starts_with("@@") {
            let mut end = word_end(i + 2);
            let mut name = &sql[i + 2..end];
            let scoped = ["global", "session", "local"]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name));
            if scoped && bytes.get(end) == Some(&b'.') {
                let name_start = end + 1;
                end = word_end(name_start);
                name = &sql[name_start..end];
            }
            if name.is_empty() {
                return Err(near(i));
            }
            toks.push((
                Tok::SysVar {
                    name: name.to_owned(),
                    text: sql[i..end].to_owned(),
                },
                start,
            ));
            i = end;
        } else if c.is_ascii_digit() {
            let end = word_end(i);
            let text = &sql[i..end];
            let n = text.parse().map_err(|_| near(i))?;
            toks.push((Tok::Int(n, text.to_owned()), start));
            i = end;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = word_end(i);
            toks.push((Tok::Word(sql[i..end].to_owned()), start));
            i = end;
        } else if c == b'`' {
            let end = sql[i + 1..]
                .find('`')
                .map(|e| i + 1 + e)
                .ok_or_else(|| near(i))?;
            toks.push((Tok::Quoted(sql[i + 1..end].to_owned()), start));
            i = end + 1;
        } else if c == b'\'' || c == b'"' {
            let (s, end) = lex_string(sql, i).ok_or_else(|| near(i))?;
            toks.push((Tok::Str(s), start));
            i = end;
        } else if b",.*=();+".contains(&c) {
            toks.push((Tok::Punct(c as char), start));
            i += 1;
        } else {
            return Err(near(i));
        }
    }
    Ok(toks)
}

/// A quoted string starting at `start`: its value and the index after the closing quote.
fn lex_string(sql: &str, start: usize) -> Option<(String, usize)> {
    let quote = sql.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = sql[start + 1..].char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            c if c == quote => {
                if chars.peek().is_some_and(|&(_, n)| n == quote) {
                    out.push(quote);
                    chars.next();
                } else {
                    return Some((out, start + 1 + at + 1));
                }
            }
            c => out.push(c),
        }
    }
    None
}

fn near_text(sql: &str, at: usize) -> String {
    sql[at..].chars().take(80).collect()
}

// ----- parsing -----

/// Parses one statement (a trailing `;` is allowed).
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    let mut toks = lex(sql)?;
    while matches!(toks.last(), Some((Tok::Punct(';'), _))) {
        toks.pop();
    }
    let mut p = Parser { sql, toks, pos: 0 };
    if p.toks.is_empty() {
        return Err(SqlError::Empty);
    }
    if p.keyword("SET") {
        return Ok(p.set());
    }
    if p.keyword("SELECT") {
        if p.reads_lease_table() {
            return lease_table::parse_select(&mut p).map(Statement::Lease);
        }
        return p.select().map(Statement::Select);
    }
    if p.keyword("INSERT") {
        return lease_table::parse_insert(&mut p).map(Statement::Lease);
    }
    if p.keyword("UPDATE") {
        return lease_table::parse_update(&mut p).map(Statement::Lease);
    }
    Err(p.syntax_error())
}

/// A select-list entry or condition side before FROM is known.
enum Raw {
    Column(String),
    Var(Var),
    Literal(Value),
}

pub(super) struct Parser<'a> {
    sql: &'a str,
    pub(super) toks: Vec<(Tok, usize)>,
    pub(super) pos: usize,
}

const RESERVED: [&str; 5] = ["FROM", "WHERE", "AND", "AS", "LIMIT"];

impl Parser<'_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    pub(super) fn syntax_error(&self) -> SqlError {
        let at = self
            .toks
            .get(self.pos)
            .map_or(self.sql.len(), |(_, at)| *at);
        SqlError::Syntax(near_text(self.sql, at))
    }

    pub(super) fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// An identifier (not a reserved word).
    pub(super) fn ident(&mut self) -> Option<String> {
        let name = match self.peek()? {
            Tok::Word(w) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w)) => w.clone(),
            Tok::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.pos += 1;
        Some(name)
    }

    /// After `SET`: the session's consistency level, or anything else (ignored).
    fn set(&mut self) -> Statement {
        self.keyword("SESSION");
        let name = match self.peek() {
            Some(Tok::SysVar { name, text }) if !text.to_ascii_lowercase().contains("global") => {
                Some(name.clone())
            }
            Some(Tok::Word(w)) => Some(w.clone()),
            _ => None,
        };
        self.pos += 1;
        let level = match (name, self.punct('='), self.peek()) {
            (Some(n), true, Some(Tok::Str(level)))
                if n.eq_ignore_ascii_case("group_replication_consistency") =>
            {
                level.clone()
            }
            _ => return Statement::Set,
        };
        Statement::Consistency(level.to_ascii_uppercase())
    }

    /// Whether this SELECT reads `vip_agent.write_lease`.
    fn reads_lease_table(&self) -> bool {
        let name = |t: &Tok, want: &str| match t {
            Tok::Word(w) | Tok::Quoted(w) => w.eq_ignore_ascii_case(want),
            _ => false,
        };
        self.toks.windows(4).any(|w| {
            name(&w[0].0, "FROM")
                && name(&w[1].0, lease_table::SCHEMA)
                && w[2].0 == Tok::Punct('.')
                && name(&w[3].0, lease_table::NAME)
        })
    }

    fn select(&mut self) -> Result<Select, SqlError> {
        let mut raw_items = Vec::new();
        let star = self.punct('*');
        if !star {
            loop {
                raw_items.push(self.item()?);
                if !self.punct(',') {
                    break;
                }
            }
        }
        let from_members = if self.keyword("FROM") {
            self.table()?;
            true
        } else {
            false
        };
        let mut raw_filter = Vec::new();
        if self.keyword("WHERE") {
            loop {
                let (a, _) = self.expr()?;
                if !self.punct('=') {
                    return Err(self.syntax_error());
                }
                let (b, _) = self.expr()?;
                raw_filter.push((a, b));
                if !self.keyword("AND") {
                    break;
                }
            }
        }
        // LIMIT row_count, as MySQL takes it: a non-negative integer literal.
        let limit = if self.keyword("LIMIT") {
            match self.peek() {
                Some(Tok::Int(n, _)) if *n >= 0 => {
                    let n = *n as u64;
                    self.pos += 1;
                    Some(n)
                }
                _ => return Err(self.syntax_error()),
            }
        } else {
            None
        };
        if self.pos != self.toks.len() {
            return Err(self.syntax_error());
        }

        let items = if star {
            if !from_members {
                return Err(SqlError::NoTables);
            }
            Column::ALL
                .into_iter()
                .map(|c| Item {
                    expr: Expr::Column(c),
                    label: c.name().to_owned(),
                })
                .collect()
        } else {
            raw_items
                .into_iter()
                .map(|(raw, label)| {
                    Ok(Item {
                        expr: resolve(raw, from_members, "field list")?,
                        label,
                    })
                })
                .collect::<Result<_, SqlError>>()?
        };
        let filter = raw_filter
            .into_iter()
            .map(|(a, b)| {
                Ok((
                    resolve(a, from_members, "where clause")?,
                    resolve(b, from_members, "where clause")?,
                ))
            })
            .collect::<Result<_, SqlError>>()?;
        Ok(Select {
            items,
            from_members,
            filter,
            limit,
        })
    }

    /// `expr [[AS] alias]`, returning the expression and its label.
    fn item(&mut self) -> Result<(Raw, String), SqlError> {
        let (raw, mut label) = self.expr()?;
        let explicit = self.keyword("AS");
        let alias = match self.peek() {
            Some(Tok::Str(s)) if explicit => {
                let s = s.clone();
                self.pos += 1;
                Some(s)
            }
            _ => self.ident(),
        };
        match alias {
            Some(alias) => label = alias,
            None if explicit => return Err(self.syntax_error()),
            None => {}
        }
        Ok((raw, label))
    }

    fn expr(&mut self) -> Result<(Raw, String), SqlError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.syntax_error());
        };
        let parsed = match tok {
            Tok::SysVar { name, text } => {
                let var = Var::from_name(&name).ok_or(SqlError::UnknownVariable(name))?;
                (Raw::Var(var), text)
            }
            Tok::Int(n, text) => (Raw::Literal(Value::Int(n)), text),
            Tok::Str(s) => (Raw::Literal(Value::Str(s.clone())), s),
            Tok::Word(_) | Tok::Quoted(_) => {
                let mut name = self.ident().ok_or_else(|| self.syntax_error())?;
                // `table.column`: the qualifier can only be our one table.
                if self.punct('.') {
                    name = self.ident().ok_or_else(|| self.syntax_error())?;
                }
                if self.peek() == Some(&Tok::Punct('(')) {
                    return Err(self.syntax_error());
                }
                return Ok((Raw::Column(name.clone()), name));
            }
            Tok::Punct(_) => return Err(self.syntax_error()),
        };
        self.pos += 1;
        Ok(parsed)
    }

    /// `performance_schema.replication_group_members`, the only table there is.
    fn table(&mut self) -> Result<(), SqlError> {
        let first = self.ident().ok_or_else(|| self.syntax_error())?;
        if !self.punct('.') {
            return Err(SqlError::NoDatabase);
        }
        let table = self.ident().ok_or_else(|| self.syntax_error())?;
        if first.eq_ignore_ascii_case("performance_schema")
            && table.eq_ignore_ascii_case("replication_group_members")
        {
            Ok(())
        } else {
            Err(SqlError::NoSuchTable(format!("{first}.{table}")))
        }
    }
}

fn resolve(raw: Raw, from_members: bool, clause: &'static str) -> Result<Expr, SqlError> {
    Ok(match raw {
        Raw::Var(v) => Expr::Var(v),
        Raw::Literal(v) => Expr::Literal(v),
        Raw::Column(name) => match Column::from_name(&name).filter(|_| from_members) {
            Some(c) => Expr::Column(c),
            None => return Err(SqlError::UnknownColumn { name, clause }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{MemberRole, MemberState};

    fn select(sql: &str) -> Select {
        match parse(sql) {
            Ok(Statement::Select(s)) => s,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn labels(s: &Select) -> Vec<&str> {
        s.items.iter().map(|i| i.label.as_str()).collect()
    }

    struct Fake;

    impl Source for Fake {
        fn rows(&self) -> Vec<MemberRow> {
            let row = |id: &str, state, role| MemberRow {
                channel_name: "group_replication_applier".into(),
                member_id: id.into(),
                member_host: "h".into(),
                member_port: Some(3306),
                member_state: state,
                member_role: role,
                member_version: "8.0.36".into(),
                member_communication_stack: "XCom".into(),
            };
            vec![
                row("u1", MemberState::Online, Some(MemberRole::Primary)),
                row("u2", MemberState::Error, None),
            ]
        }

        fn var(&self, var: Var) -> Result<Value, SqlError> {
            match var {
                Var::ServerUuid => Ok(Value::Str("u2".into())),
                Var::SinglePrimaryMode => Err(SqlError::UnknownVariable(var.name().into())),
                _ => Ok(Value::Int(1)),
            }
        }
    }

    #[test]
    fn star_from_members_expands_all_columns() {
        let s = select("select * from performance_schema.replication_group_members");
        assert!(s.from_members);
        assert_eq!(labels(&s), Column::ALL.map(Column::name).to_vec());
    }

    #[test]
    fn column_list_keeps_labels_and_aliases() {
        let s = select(
            "SELECT member_id, `MEMBER_STATE` AS st, replication_group_members.MEMBER_ROLE role \
             FROM `performance_schema`.`replication_group_members`;",
        );
        assert_eq!(labels(&s), ["member_id", "st", "role"]);
        assert_eq!(s.items[2].expr, Expr::Column(Column::MemberRole));
    }

    #[test]
    fn variables_in_any_form() {
        let s = select(
            "SELECT @@server_uuid, @@GLOBAL.super_read_only AS sro, @@session.port, \
             @@group_replication_single_primary_mode,@@socket",
        );
        assert!(!s.from_members);
        assert_eq!(
            s.items.iter().map(|i| i.expr.clone()).collect::<Vec<_>>(),
            [
                Expr::Var(Var::ServerUuid),
                Expr::Var(Var::SuperReadOnly),
                Expr::Var(Var::Port),
                Expr::Var(Var::SinglePrimaryMode),
                Expr::Var(Var::Socket),
            ]
        );
        assert_eq!(
            labels(&s),
            [
                "@@server_uuid",
                "sro",
                "@@session.port",
                "@@group_replication_single_primary_mode",
                "@@socket"
            ]
        );
    }

    #[test]
    fn mysql_async_connect_query() {
        let s = select("SELECT @@max_allowed_packet,@@wait_timeout,@@socket");
        assert_eq!(s.items.len(), 3);
    }

    #[test]
    fn literals_and_set() {
        let s = select("SELECT 1");
        assert_eq!(s.items[0].expr, Expr::Literal(Value::Int(1)));
        assert_eq!(s.items[0].label, "1");
        assert_eq!(parse("SET NAMES utf8mb4"), Ok(Statement::Set));
        assert_eq!(parse("set autocommit=1;"), Ok(Statement::Set));
    }

    #[test]
    fn errors_are_mysqls() {
        let code = |sql| parse(sql).unwrap_err().code();
        assert_eq!(code("SELECT @@no_such_var"), 1193);
        assert_eq!(code("SELECT * FROM mysql.user"), 1146);
        assert_eq!(code("SELECT * FROM replication_group_members"), 1046);
        assert_eq!(code("SELECT *"), 1096);
        assert_eq!(code("SELECT member_id"), 1054);
        assert_eq!(
            code("SELECT x FROM performance_schema.replication_group_members"),
            1054
        );
        assert_eq!(code("SHOW DATABASES"), 1064);
        assert_eq!(code("SELECT NOW()"), 1064);
        assert_eq!(code("SELECT 1 FROM"), 1064);
        assert_eq!(code("SELECT 'unterminated"), 1064);
        assert_eq!(code("  ;"), 1065);
        let msg = parse("SELECT @@nope").unwrap_err().to_string();
        assert_eq!(msg, "Unknown system variable 'nope'");
    }

    #[test]
    fn evaluate_rows_and_where() {
        let s = select(
            "SELECT MEMBER_ID, MEMBER_PORT, MEMBER_ROLE FROM \
             performance_schema.replication_group_members WHERE member_id = @@server_uuid",
        );
        let t = s.evaluate(&Fake).unwrap();
        assert_eq!(t.columns[1], ("MEMBER_PORT".to_owned(), Kind::Int));
        assert_eq!(
            t.rows,
            [vec![
                Value::Str("u2".into()),
                Value::Int(3306),
                Value::Str(String::new())
            ]]
        );
        let s = select(
            "SELECT member_id FROM performance_schema.replication_group_members \
             WHERE member_state = 'online' AND MEMBER_PORT = '3306'",
        );
        assert_eq!(
            s.evaluate(&Fake).unwrap().rows,
            [vec![Value::Str("u1".into())]]
        );
    }

    #[test]
    fn limit_bounds_the_rows() {
        let all = "SELECT member_id FROM performance_schema.replication_group_members";
        assert_eq!(select(all).evaluate(&Fake).unwrap().rows.len(), 2);
        let one = select(&format!("{all} LIMIT 1"));
        assert_eq!(one.limit, Some(1));
        assert_eq!(
            one.evaluate(&Fake).unwrap().rows,
            [vec![Value::Str("u1".into())]]
        );
        assert_eq!(
            select(&format!("{all} limit 10;"))
                .evaluate(&Fake)
                .unwrap()
                .rows
                .len(),
            2
        );
        let code = |sql: &str| parse(sql).unwrap_err().code();
        assert_eq!(code(&format!("{all} LIMIT")), 1064);
        assert_eq!(code(&format!("{all} LIMIT 'x'")), 1064);
        assert_eq!(code(&format!("{all} LIMIT -1")), 1064);
    }

    #[test]
    fn evaluate_unavailable_variable_fails() {
        let s = select("SELECT @@group_replication_single_primary_mode");
        assert_eq!(s.evaluate(&Fake).unwrap_err().code(), 1193);
    }

    #[test]
    fn strings_unescape() {
        let s = select(r#"SELECT 'it''s', "a\"b""#);
        assert_eq!(s.items[0].expr, Expr::Literal(Value::Str("it's".into())));
        assert_eq!(s.items[1].expr, Expr::Literal(Value::Str("a\"b".into())));
    }
}
