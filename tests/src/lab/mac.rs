//! Ethernet (MAC) addresses, printed and parsed the way `ip` shows them.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};

/// A 48-bit Ethernet address, shown as `02:00:00:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Reads a MAC from the first six bytes of `bytes`, if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        Some(Mac(bytes.get(..6)?.try_into().ok()?))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Mac> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts
                .next()
                .with_context(|| format!("MAC {s:?}: too short"))?;
            *byte = u8::from_str_radix(part, 16).with_context(|| format!("MAC {s:?}"))?;
        }
        if parts.next().is_some() {
            bail!("MAC {s:?}: too long");
        }
        Ok(Mac(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let mac: Mac = "02:00:00:00:01:0a".parse().unwrap();
        assert_eq!(mac, Mac([2, 0, 0, 0, 1, 10]));
        assert_eq!(mac.to_string(), "02:00:00:00:01:0a");
        assert!("02:00:00:00:01".parse::<Mac>().is_err());
        assert!("02:00:00:00:01:0a:0b".parse::<Mac>().is_err());
        assert!("zz:00:00:00:01:0a".parse::<Mac>().is_err());
    }
}
