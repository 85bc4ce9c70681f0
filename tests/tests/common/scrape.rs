//! Scraping an agent's Prometheus endpoint from inside its host's network namespace, and
//! reading series out of the text.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use vip_tests::cluster::Cluster;

/// Where the tests' agents serve metrics: each host's own loopback, in its namespace.
pub const LISTEN: &str = "127.0.0.1:9748";

/// `GET /metrics` on host `i`'s endpoint: the body of a 200 answer, else what came back.
pub fn scrape(c: &Cluster, i: usize) -> Result<String, String> {
    let answer = c
        .host(i)
        .run_in(|| -> std::io::Result<String> {
            let to: SocketAddr = LISTEN.parse().unwrap();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200 OK") => Ok(body.to_string()),
        _ => Err(answer),
    }
}

/// The value of one series (name and labels exactly as printed), if scraped.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, v)| v.parse().ok())
}
