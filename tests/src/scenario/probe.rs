//! A client that keeps opening new MySQL sessions through a VIP, as an application
//! reconnecting after a failover does, and notes which member answered each.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use mysql_async::prelude::Queryable;

use crate::lab::Host;

/// One attempt's connect-and-query bound: a SYN to a host that dropped the VIP gets no
/// answer, so this bounds how long one stale attempt blocks the next.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
/// Pause between attempts (the probe's resolution, with the attempt itself).
const PAUSE: Duration = Duration::from_millis(5);

/// The server_uuid a new session reached, and when it answered.
#[derive(Clone, Debug)]
pub struct Reached {
    pub at: Instant,
    pub uuid: String,
}

/// The running probe; it stops when dropped.
pub struct Probe {
    reached: Arc<Mutex<Vec<Reached>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Probe {
    /// Starts probing `addr`:3306 from `client`.
    pub fn start(client: &Host, addr: IpAddr) -> Result<Probe> {
        let reached = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ns = client.ns().to_owned();
        let (r, s) = (Arc::clone(&reached), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let _ = crate::netns::run_in(&ns, move || probe_loop(addr, &r, &s));
        });
        Ok(Probe {
            reached,
            stop,
            thread: Some(thread),
        })
    }

    /// The first session after `since` that reached `uuid`.
    pub fn first_reaching(&self, uuid: &str, since: Instant) -> Option<Instant> {
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.at >= since && r.uuid == uuid)
            .map(|r| r.at)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_loop(addr: IpAddr, reached: &Mutex<Vec<Reached>>, stop: &AtomicBool) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let opts = crate::cluster::client_opts(addr);
    while !stop.load(Ordering::Relaxed) {
        let attempt = async {
            let mut conn = mysql_async::Conn::new(opts.clone()).await.ok()?;
            let uuid: Option<String> = conn.query_first("SELECT @@server_uuid").await.ok()?;
            let _ = conn.disconnect().await;
            uuid
        };
        if let Ok(Some(uuid)) =
            rt.block_on(async { tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await })
        {
            reached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Reached {
                    at: Instant::now(),
                    uuid,
                });
        }
        std::thread::sleep(PAUSE);
    }
}
