//! vip-agent as a library: the modules the `vip-agent` binary is made of, exposed so the
//! end-to-end tests in `tests/` can drive the actuators directly.
//!
//! - [`agent`]: the reconcile loop, the one owner of the agent's state.
//! - [`core`]: the coordination core: leases and placements, pure (events in, effects out).
//! - [`config`]: the TOML configuration, its strict validation, and import from my.cnf.
//! - [`mgr`]: reads the local mysqld's view of the group and classifies this node.
//! - [`net`]: binds VIPs with netlink and announces them (gratuitous ARP, unsolicited NA).
//! - [`datapath`]: the eBPF programs embedded in the binary, and their pins.
//! - [`logging`]: structured logs (tracing), journald-friendly.
//! - [`privileges`]: the capabilities dropped once the agent has started.
//! - [`prepare`]: `vip-agent prepare`, what a service user needs from root before start.
//! - [`metrics`]: the Prometheus endpoint (`[metrics]`).

pub mod agent;
pub mod config;
pub mod control;
pub mod core;
pub mod datapath;
pub mod logging;
pub mod metrics;
pub mod mgr;
pub mod net;
pub mod peer;
pub mod plan;
pub mod prepare;
pub mod privileges;
