//! A simulated MySQL Group Replication group for vip-agent's tests.
//!
//! Real MySQL with group replication cannot be installed here, so each member is a small
//! MySQL-protocol server (opensrv-mysql) that mysql_async connects to with a real
//! password check, and that answers `performance_schema.replication_group_members` and
//! the system variables the agent reads, each member from its own view of the group.
//! A controller ([`SimGroup`]) scripts the documented transitions: primary crash, planned
//! switchover, expel, partition and heal, rejoin, multi-primary mode, plugin states, and
//! a mysqld that hangs, goes down or refuses connections with error 1040.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use vip_tests::sim::{AuthPlugin, SimGroup};
//! let group = SimGroup::builder()
//!     .members(3)
//!     .user("vip", "secret")
//!     .auth_plugin(AuthPlugin::MysqlNativePassword)
//!     .unreachable_after(Duration::from_millis(100))
//!     .expel_after(Duration::from_millis(200))
//!     .start()?;
//! let conn = mysql_async::Conn::new(group.opts(0)).await?;
//! group.crash(0).await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`group`] (builder and controller), [`model`] (the values reported and
//! configured), [`state`] (the views and their rules, clock-driven and pure), [`server`]
//! (listeners and endpoint behaviour), `shim` (one connection), [`sql`] (query
//! recognition), [`lease_table`] (the agents' lease row), [`auth`] (password checks), `wire` (byte-level fix-ups around opensrv).

pub mod auth;
pub mod group;
pub mod lease_table;
pub mod model;
pub mod server;
mod shim;
pub mod sql;
pub mod state;
mod wire;

pub use auth::AuthPlugin;
pub use group::{MemberSpec, SimGroup, SimGroupBuilder, uuid_of};
pub use model::{Event, MemberRole, MemberRow, MemberState, Plugin, Timings};
pub use server::{Endpoint, Listen, MemberAddr};
