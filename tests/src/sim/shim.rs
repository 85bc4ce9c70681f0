//! One client connection to a simulated member: the opensrv-mysql `AsyncMysqlShim` that
//! checks the password and answers queries from the member's own view.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use opensrv_mysql::{
    AsyncMysqlShim, Column as WireColumn, ColumnFlags, ColumnType, ErrorKind, OkResponse,
    ParamParser, QueryResultWriter, StatementMetaWriter,
};
use tokio::io::AsyncWrite;

use super::auth::{self, AuthPlugin};
use super::model::{MemberRow, Plugin};
use super::sql::{self, Kind, SqlError, Statement, Value, Var};
use super::state::{LeaseOutcome, World};
use super::wire::Denial;

/// The server version in the greeting and @@version: an 8.0 one, because mysql_async
/// picks protocol details (such as how to reset a connection) by version.
pub const VERSION_SUFFIX: &str = "-sim";

/// What all connections of a group share.
pub struct Shared {
    pub world: Mutex<World>,
    pub user: String,
    pub password: String,
    pub auth_plugin: AuthPlugin,
    next_connection_id: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub fn new(world: World, user: String, password: String, auth_plugin: AuthPlugin) -> Self {
        Shared {
            world: Mutex::new(world),
            user,
            password,
            auth_plugin,
            next_connection_id: 1.into(),
        }
    }

    /// The world, brought up to date.
    pub fn world(&self) -> MutexGuard<'_, World> {
        // A panic elsewhere must not hide the state from later assertions.
        let mut world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        world.advance(Instant::now());
        world
    }
}

/// The server side of one connection to member `member`.
pub struct Shim {
    shared: Arc<Shared>,
    member: usize,
    /// Generated once: opensrv asks for the salt twice (greeting and auth switch).
    nonce: [u8; auth::NONCE_LEN],
    connection_id: u32,
    peer_host: String,
    denial: Denial,
    prepared: HashMap<u32, Statement>,
    next_statement: u32,
    /// The session's group_replication_consistency is BEFORE.
    before: bool,
}

/// How often a statement MGR holds (a blocked commit) is tried again.
const BLOCKED_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

impl Shim {
    pub fn new(shared: Arc<Shared>, member: usize, peer_host: String, denial: Denial) -> Self {
        let connection_id = shared
            .next_connection_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Shim {
            shared,
            member,
            nonce: auth::new_nonce(),
            connection_id,
            peer_host,
            denial,
            prepared: HashMap::new(),
            next_statement: 1,
            before: false,
        }
    }

    /// Runs a recognised statement against this member's current state: its result set
    /// (if it has one) and the rows it changed. A statement MGR holds waits here, as a
    /// real client waits for its commit, until it goes through or its member leaves the
    /// group.
    async fn run(&mut self, statement: &Statement) -> Result<(Option<sql::Table>, u64), SqlError> {
        match statement {
            Statement::Set => Ok((None, 0)),
            Statement::Consistency(level) => {
                self.before = level.starts_with("BEFORE");
                Ok((None, 0))
            }
            Statement::Select(select) => {
                let world = self.shared.world();
                select
                    .evaluate(&MemberSource {
                        world: &world,
                        member: self.member,
                    })
                    .map(|t| (Some(t), 0))
            }
            Statement::Lease(stmt) => {
                let mut waited = false;
                loop {
                    let outcome = self.shared.world().lease(self.member, stmt, self.before);
                    match outcome {
                        LeaseOutcome::Done(Err(SqlError::ReadOnly)) if waited => {
                            return Err(SqlError::Rollback);
                        }
                        LeaseOutcome::Done(done) => return done,
                        LeaseOutcome::Blocked => {
                            waited = true;
                            tokio::time::sleep(BLOCKED_RETRY).await;
                        }
                    }
                }
            }
        }
    }
}

/// One member's answers, for [`Select::evaluate`].
pub struct MemberSource<'a> {
    pub world: &'a World,
    pub member: usize,
}

impl sql::Source for MemberSource<'_> {
    fn rows(&self) -> Vec<MemberRow> {
        self.world.rows(self.member)
    }

    fn cell(&self, row: &MemberRow, column: sql::Column) -> Value {
        self.world.cell(row, column)
    }

    fn var(&self, var: Var) -> Result<Value, SqlError> {
        let w = self.world;
        let i = self.member;
        let info = w.info(i);
        if var.needs_plugin() && w.plugin(i) == Plugin::NotLoaded {
            return Err(SqlError::UnknownVariable(var.name().to_owned()));
        }
        let flag = |b: bool| Value::Int(b.into());
        Ok(match var {
            Var::ServerUuid => Value::Str(info.uuid.clone()),
            Var::SinglePrimaryMode => flag(w.single_primary()),
            Var::EnforceUpdateEverywhereChecks => flag(!w.single_primary()),
            Var::MemberWeight => Value::Int(info.weight.into()),
            // read_only follows super_read_only: GR sets and clears both together.
            Var::SuperReadOnly | Var::ReadOnly => flag(w.super_read_only(i)),
            Var::Port => Value::Int(info.port.into()),
            Var::ReportHost => Value::Str(info.report_host.clone()),
            Var::Hostname => Value::Str(info.hostname.clone()),
            Var::Version => Value::Str(format!("{}{VERSION_SUFFIX}", info.version)),
            Var::MaxAllowedPacket => Value::Int(64 << 20),
            Var::WaitTimeout => Value::Int(28800),
            // NULL keeps mysql_async (prefer_socket) from switching to a socket path.
            Var::Socket => Value::Null,
        })
    }
}

fn wire_columns(statement: &Statement) -> Vec<WireColumn> {
    let (table, columns) = match statement {
        Statement::Select(s) if s.from_members => ("replication_group_members", s.columns()),
        Statement::Select(s) => ("", s.columns()),
        Statement::Lease(l) => (super::lease_table::NAME, l.columns()),
        _ => ("", Vec::new()),
    };
    columns
        .into_iter()
        .map(|(label, kind)| WireColumn {
            table: table.to_owned(),
            column: label,
            coltype: match kind {
                Kind::Int => ColumnType::MYSQL_TYPE_LONGLONG,
                Kind::Str => ColumnType::MYSQL_TYPE_VAR_STRING,
            },
            colflags: ColumnFlags::empty(),
        })
        .collect()
}

async fn reply<W: AsyncWrite + Send + Unpin>(
    statement: &Statement,
    answer: Result<(Option<sql::Table>, u64), SqlError>,
    results: QueryResultWriter<'_, W>,
) -> io::Result<()> {
    match answer {
        Err(e) => {
            results
                .error(ErrorKind::from(e.code()), e.to_string().as_bytes())
                .await
        }
        Ok((Some(table), _)) => {
            let columns = wire_columns(statement);
            let mut rows = results.start(&columns).await?;
            for row in &table.rows {
                for value in row {
                    match value {
                        Value::Null => rows.write_col(None::<i64>)?,
                        Value::Int(n) => rows.write_col(*n)?,
                        Value::Str(s) => rows.write_col(s.as_str())?,
                    }
                }
                rows.end_row().await?;
            }
            rows.finish().await
        }
        Ok((None, affected_rows)) => {
            let ok = OkResponse {
                affected_rows,
                ..OkResponse::default()
            };
            results.completed(ok).await
        }
    }
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Shim {
    type Error = io::Error;

    fn version(&self) -> String {
        let version = self.shared.world().info(self.member).version.clone();
        format!("{version}{VERSION_SUFFIX}")
    }

    fn connect_id(&self) -> u32 {
        self.connection_id
    }

    fn default_auth_plugin(&self) -> &str {
        self.shared.auth_plugin.name()
    }

    async fn auth_plugin_for_username(&self, _user: &[u8]) -> &str {
        self.shared.auth_plugin.name()
    }

    fn salt(&self) -> [u8; auth::NONCE_LEN] {
        self.nonce
    }

    async fn authenticate(&self, plugin: &str, user: &[u8], salt: &[u8], answer: &[u8]) -> bool {
        let ok = plugin == self.shared.auth_plugin.name()
            && user == self.shared.user.as_bytes()
            && self
                .shared
                .auth_plugin
                .verify(&self.shared.password, salt, answer);
        if !ok {
            let message = format!(
                "Access denied for user '{}'@'{}' (using password: {})",
                String::from_utf8_lossy(user),
                self.peer_host,
                if answer.is_empty() { "NO" } else { "YES" }
            );
            *self.denial.lock().unwrap() = Some(message);
        }
        ok
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        // Prepared statements without parameters: enough for mysql_async's `exec*`.
        match sql::parse(query) {
            Err(e) => {
                info.error(ErrorKind::from(e.code()), e.to_string().as_bytes())
                    .await
            }
            Ok(statement) => {
                let id = self.next_statement;
                self.next_statement += 1;
                let columns = wire_columns(&statement);
                self.prepared.insert(id, statement);
                info.reply(id, &[], &columns).await
            }
        }
    }

    async fn on_execute<'a>(
        &'a mut self,
        id: u32,
        _params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        let Some(statement) = self.prepared.get(&id).cloned() else {
            let msg =
                format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute");
            return results
                .error(ErrorKind::ER_UNKNOWN_STMT_HANDLER, msg.as_bytes())
                .await;
        };
        let answer = self.run(&statement).await;
        reply(&statement, answer, results).await
    }

    async fn on_close<'a>(&'a mut self, id: u32)
    where
        W: 'async_trait,
    {
        self.prepared.remove(&id);
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        log::debug!("sim member {}: {query}", self.member);
        match sql::parse(query) {
            Err(e) => reply(&Statement::Set, Err(e), results).await,
            Ok(statement) => {
                let answer = self.run(&statement).await;
                reply(&statement, answer, results).await
            }
        }
    }
}
