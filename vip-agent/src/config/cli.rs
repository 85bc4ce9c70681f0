//! The `check-config` and `import-mycnf` commands: print, and return the exit code.

use std::path::Path;

use super::{Config, import, load, mycnf};

/// `vip-agent check-config FILE`: every problem on stderr (exit 1), or a summary (exit 0).
pub fn check_config(path: &Path) -> i32 {
    match load(path) {
        Ok(cfg) => {
            println!("{}: OK", path.display());
            print!("{}", summary(&cfg));
            0
        }
        Err(errors) => {
            let n = errors.0.len();
            eprintln!(
                "{}: {n} problem{}:",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            for e in &errors.0 {
                eprintln!("{e}");
            }
            1
        }
    }
}

/// The operator's view of a valid config, one item per line.
pub fn summary(cfg: &Config) -> String {
    let v = &cfg.vip;
    let mysqld = cfg.mysql.endpoint.to_string();
    let tls = if cfg.mysql.tls.is_some() { ", TLS" } else { "" };
    let write = match v.write_vip {
        Some(a) => format!("{a}/{} on {} (label {})", v.prefix, v.nic, v.label),
        None => "none".to_string(),
    };
    let read = if v.read_vips.is_empty() {
        "none".to_string()
    } else {
        let list: Vec<String> = v.read_vips.iter().map(ToString::to_string).collect();
        format!("{} (floating type {})", list.join(", "), v.floating_type)
    };
    let mut out = String::new();
    let mut row = |name: &str, value: String| out.push_str(&format!("  {name:<14} {value}\n"));
    row("instance", cfg.instance.clone());
    row(
        "mysqld",
        format!(
            "{mysqld} as {}{tls}, poll every {} ms",
            cfg.mysql.user,
            cfg.mysql.poll_interval.as_millis()
        ),
    );
    row(
        "VIPs",
        if v.enable {
            "enabled".to_string()
        } else {
            "disabled (enable = false): holds nothing".to_string()
        },
    );
    row("write VIP", write);
    row("read VIPs", read);
    row(
        "announcements",
        format!(
            "{} every {} ms",
            v.announce_count,
            v.announce_interval.as_millis()
        ),
    );
    if let Some(every) = v.reannounce_interval {
        row(
            "re-announce",
            format!("every held VIP every {} ms", every.as_millis()),
        );
    }
    if let Some(gw) = v.gateway {
        row(
            "gateway",
            format!("{gw} (not used: vip-agent never changes the group's membership)"),
        );
    }
    if v.kill_connections_on_demotion {
        row("on demotion", "kill client connections".to_string());
    }
    let p = &cfg.peer;
    row(
        "peer port",
        format!(
            "{}, at most {} connections ({} per address), {}",
            std::net::SocketAddr::new(p.listen, p.port),
            p.max_connections,
            p.max_connections_per_host,
            match &p.key_file {
                Some(key) => format!("key {}", key.display()),
                None => "no key file".to_string(),
            }
        ),
    );
    row(
        "peer allow",
        match &p.allow {
            Some(nets) => nets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            None => "the hosts of this node's views (MEMBER_HOST)".to_string(),
        },
    );
    row(
        "peer timing",
        format!(
            "exchange {} ms, switchover wait {} ms, resync every {} ms",
            p.timeout.as_millis(),
            p.switchover_timeout.as_millis(),
            p.resync_interval.as_millis()
        ),
    );
    row("control socket", cfg.control.socket.display().to_string());
    row(
        "metrics",
        match &cfg.metrics {
            Some(m) => format!(
                "Prometheus endpoint http://{}/metrics (no authentication)",
                m.listen
            ),
            None => "off (no [metrics] table)".to_string(),
        },
    );
    out
}

/// `vip-agent import-mycnf PATH [--section GROUP]`: TOML on stdout, warnings on stderr.
pub fn import_mycnf(path: &Path, section: Option<&str>) -> i32 {
    let file = match mycnf::read(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vip-agent: {e}");
            return 1;
        }
    };
    for w in &file.warnings {
        eprintln!("warning: {w}");
    }
    let imported = match import::import(&file, section) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vip-agent: {}: {e}", path.display());
            return 1;
        }
    };
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    let several = imported.instances.len() > 1;
    if several {
        let names: Vec<&str> = imported
            .instances
            .iter()
            .map(|i| i.instance.as_str())
            .collect();
        eprintln!(
            "note: {} instances ({}): one TOML each below, split at the `# ==== instance` lines, or pick one with --section",
            names.len(),
            names.join(", ")
        );
    }
    for (i, inst) in imported.instances.iter().enumerate() {
        if several {
            if i > 0 {
                println!();
            }
            println!(
                "# ==== instance {} from [{}]: save as /etc/vip-agent/{}.toml ====",
                inst.instance, inst.group, inst.instance
            );
        }
        print!("{}", inst.toml);
    }
    0
}
