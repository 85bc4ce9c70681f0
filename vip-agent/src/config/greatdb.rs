//! Which greatdb_ha variable each config key replaces, so that error messages, key
//! suggestions and `import-mycnf` speak the GreatSQL operator's language.

/// (config key, greatdb_ha variable). `vip.mask` and `vip.prefix` both come from
/// `greatdb_ha_mgr_vip_mask` (a dotted mask for IPv4, a prefix length for IPv6).
pub const KEYS: &[(&str, &str)] = &[
    ("vip.enable", "greatdb_ha_enable_mgr_vip"),
    ("vip.write_vip", "greatdb_ha_mgr_vip_ip"),
    ("vip.prefix", "greatdb_ha_mgr_vip_mask"),
    ("vip.mask", "greatdb_ha_mgr_vip_mask"),
    ("vip.nic", "greatdb_ha_mgr_vip_nic"),
    ("vip.read_vips", "greatdb_ha_mgr_read_vip_ips"),
    ("vip.floating_type", "greatdb_ha_mgr_read_vip_floating_type"),
    ("vip.announce_count", "greatdb_ha_send_arp_packge_times"),
    ("vip.gateway", "greatdb_ha_gateway_address"),
    (
        "vip.kill_connections_on_demotion",
        "greatdb_ha_mgr_exit_primary_kill_connection_mode",
    ),
    ("peer.port", "greatdb_ha_port"),
];

/// The greatdb_ha variable a key replaces; `vip.read_vips[2]` counts as `vip.read_vips`.
pub fn variable_for_key(key: &str) -> Option<&'static str> {
    let key = key.split('[').next().unwrap_or(key);
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// The config key for a greatdb_ha variable, however it is spelled: with or without
/// `loose-` and `greatdb_ha_`, `-` or `_`. `mgr_vip_mask` maps to `vip.prefix`.
pub fn key_for_variable(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    let name = name.strip_prefix("loose_").unwrap_or(&name);
    let short = name.strip_prefix("greatdb_ha_").unwrap_or(name);
    KEYS.iter()
        .find(|(_, v)| v.strip_prefix("greatdb_ha_") == Some(short))
        .map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_ways() {
        assert_eq!(
            variable_for_key("vip.read_vips[3]"),
            Some("greatdb_ha_mgr_read_vip_ips")
        );
        assert_eq!(variable_for_key("mysql.user"), None);
        assert_eq!(
            key_for_variable("loose-greatdb-ha-mgr-vip-ip"),
            Some("vip.write_vip")
        );
        assert_eq!(
            key_for_variable("send_arp_packge_times"),
            Some("vip.announce_count")
        );
        assert_eq!(
            key_for_variable("greatdb_ha_mgr_vip_mask"),
            Some("vip.prefix")
        );
        assert_eq!(key_for_variable("port"), Some("peer.port"));
        assert_eq!(key_for_variable("vip_tope"), None);
    }
}
