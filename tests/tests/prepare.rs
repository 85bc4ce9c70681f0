//! `vip-agent prepare` runs as root before every start of an agent whose service user
//! owns its pin folder. Whatever that user (a compromised agent) leaves there or on the
//! way to the control socket, root must not be tricked into handing over another file:
//! no link is followed, and what is not one of the agent's pins is left alone and named.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vip_tests::SERVICE_USER as USER;
use vip_tests::cluster::{Cluster, VipSettings};
use vip_tests::scratch::TempDir;

/// Removes what the test made in bpffs, also when it fails.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A root-owned file in bpffs (a map pinned by bpftool), for a hard link to point at.
fn root_pin(path: &Path) {
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args([
            "type", "array", "key", "4", "value", "4", "entries", "1", "name", "victim",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool map create: {out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prepare_follows_no_link_the_service_user_planted() {
    if !vip_tests::privileged() {
        return;
    }
    vip_tests::service_user();
    let c = Cluster::start(1, VipSettings::default(), vip_tests::agent_binary(), |g| g).unwrap();
    let scratch = TempDir::new("prepare");
    // Root's secrets, as /etc/shadow would be.
    let victim = scratch.write("victim", "secret\n");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let victim_dir = scratch.join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    let settings = VipSettings {
        instance: "pp".into(),
        ..VipSettings::default()
    };
    let name = "prep";
    let instance = c.agent_settings(&settings, name).instance;
    let pins = Path::new("/sys/fs/bpf/vip-agent").join(&instance);
    let pinned_victim = PathBuf::from(format!("/sys/fs/bpf/{instance}-victim"));
    let _cleanup = Cleanup(vec![pins.clone(), pinned_victim.clone()]);
    std::fs::create_dir_all(&pins).unwrap();
    root_pin(&pinned_victim);
    let pinned_before = owner_and_mode(&pinned_victim);

    // What a compromised agent leaves in its folder before it exits: links named like
    // its own pins, to root's files.
    std::os::unix::fs::symlink(&victim, pins.join("vips")).unwrap();
    std::fs::hard_link(&pinned_victim, pins.join("connections")).unwrap();
    // ... and a link on the way to a control socket folder that does not exist yet.
    let user_dir = scratch.join("agent-owned");
    std::fs::create_dir(&user_dir).unwrap();
    let link = user_dir.join("run");
    std::os::unix::fs::symlink(&victim_dir, &link).unwrap();
    let uid = vip_tests::service_user();
    for path in [&user_dir, &link] {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    let mut config =
        std::fs::read_to_string(c.write_config_named(0, &settings, name).unwrap()).unwrap();
    let socket = link.join("sub/agent.sock");
    let old_socket = c.socket(name).display().to_string();
    config = config.replace(&old_socket, &socket.display().to_string());
    let config_path = scratch.write("prep.toml", &config);
    let out = c
        .agent_command(
            0,
            &[
                "prepare",
                "--config",
                &config_path.display().to_string(),
                "--user",
                USER,
            ],
        )
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    // Nothing of root's changed hands, whatever prepare said.
    assert_eq!(owner_and_mode(&victim), (0, 0, 0o600), "{stdout}{stderr}");
    assert_eq!(
        owner_and_mode(&victim_dir),
        (0, 0, 0o700),
        "{stdout}{stderr}"
    );
    assert!(!victim_dir.join("sub").exists(), "{stdout}{stderr}");
    assert_eq!(
        owner_and_mode(&pinned_victim),
        pinned_before,
        "{stdout}{stderr}"
    );
    // The pin folder itself is the user's, and what was skipped is named.
    assert_eq!(owner_and_mode(&pins).0, uid, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} (a symbolic link)",
            pins.join("vips").display()
        )),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "{} (a file with 2 hard links)",
            pins.join("connections").display()
        )),
        "{stdout}{stderr}"
    );
    // The socket's folder is refused with the link named, so the start stops.
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "control.socket: {} is a symbolic link owned by uid {uid}, not root",
            link.display()
        )),
        "{stdout}{stderr}"
    );
    assert!(
        vip_tests::lab::wait_for(Duration::from_secs(1), || c.agent_problems().is_empty()),
        "{:?}",
        c.agent_problems()
    );
}
