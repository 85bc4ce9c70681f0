use std::time::Duration;
use vip_tests::cluster::{Cluster, VipSettings};
#[tokio::test(flavor = "multi_thread")]
async fn show() {
    let settings = VipSettings {
        read_vips: ["198.51.100.61", "198.51.100.62", "198.51.100.63"].iter().map(|s| s.parse().unwrap()).collect(),
        instance: "show".into(),
        ..VipSettings::default()
    };
    let c = Cluster::start(3, settings, vip_tests::agent_binary(), |g| g).unwrap();
    c.wait_sole_holder(0, Duration::from_secs(20)).unwrap();
    c.wait(Duration::from_secs(20), "placed", |c| c.read_placement().iter().all(|(_, h)| h.len() == 1)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let show = |i: usize, v: &[&str]| {
        let o = c.control(i, v).unwrap();
        println!("$ vip-agent {} (h{}) -> {:?}\n{}{}", v.join(" "), i + 1, o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    };
    show(0, &["status"]);
    show(1, &["status"]);
    show(0, &["topology"]);
    let (u1, u2, u3) = (c.group.uuid(0), c.group.uuid(1), c.group.uuid(2));
    show(0, &["set-topology", &format!("{u1}::; {u2}::198.51.100.61,198.51.100.62; {u3}::198.51.100.63")]);
    show(0, &["set-topology", &format!("{u2}::198.51.100.61,198.51.100.99; {u3}::198.51.100.63")]);
    show(1, &["set-topology", &format!("{u2}::198.51.100.61")]);
    show(0, &["force-rebind"]);
    show(1, &["force-rebind"]);
    show(0, &["reload"]);
    show(0, &["status", "--json"]);
}
