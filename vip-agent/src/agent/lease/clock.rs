//! The core's clock, and the kernel's.
//!
//! The core counts on CLOCK_BOOTTIME: it keeps running while the machine is suspended,
//! where CLOCK_MONOTONIC stops, so a lease taken before a suspend is over after it as far
//! as the core can tell. When every clock of the machine stopped (a whole virtual machine
//! paused), only the realtime clock shows the gap once it is corrected on resume: a
//! realtime step forward of more than the late-tick bound beyond what BOOTTIME counted is
//! added to the core's clock, so the core sees a late tick and suspends holding. (A
//! realtime step an administrator or NTP makes looks the same; it costs a suspension and
//! a fresh confirmation, never safety.)
//!
//! The kernel's lease ends are CLOCK_MONOTONIC nanoseconds, the clock of
//! `bpf_ktime_get_ns`: each is written relative to now, so it is never later in real
//! time than the core's own end.

use std::time::Duration;

use crate::core::Now;
use crate::datapath::vip_table::monotonic_ns;

/// One reading of the two clocks the core's clock is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub boot: Duration,
    pub real: Duration,
}

impl Sample {
    pub fn read() -> Sample {
        Sample {
            boot: read(libc::CLOCK_BOOTTIME),
            real: read(libc::CLOCK_REALTIME),
        }
    }
}

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; both clocks always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The core's `Now`: BOOTTIME since the start, plus every gap only the realtime clock saw.
#[derive(Debug)]
pub struct Clock {
    start: Duration,
    ahead: Duration,
    last: Option<Sample>,
    late: Duration,
}

impl Clock {
    pub fn new(late: Duration, first: Sample) -> Clock {
        Clock {
            start: first.boot,
            ahead: Duration::ZERO,
            last: Some(first),
            late,
        }
    }

    /// Now, from a fresh reading.
    pub fn now(&mut self) -> Now {
        self.at(Sample::read())
    }

    /// Now at `s`. Pure apart from `self`: never goes backwards.
    pub fn at(&mut self, s: Sample) -> Now {
        if let Some(last) = self.last {
            let boot = s.boot.saturating_sub(last.boot);
            let real = s.real.saturating_sub(last.real);
            if real > boot + self.late {
                self.ahead += real - boot;
            }
        }
        self.last = Some(s);
        s.boot.saturating_sub(self.start) + self.ahead
    }

    /// A core time `until` as the kernel's CLOCK_MONOTONIC nanoseconds, given that it
    /// is `now` on the core's clock.
    pub fn kernel_ns(until: Now, now: Now) -> u64 {
        let left = until.saturating_sub(now).as_nanos() as u64;
        monotonic_ns().saturating_add(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(boot_ms: u64, real_ms: u64) -> Sample {
        Sample {
            boot: Duration::from_millis(boot_ms),
            real: Duration::from_millis(real_ms),
        }
    }

    #[test]
    fn boottime_drives_it_and_only_a_realtime_gap_beyond_the_bound_is_added() {
        let ms = Duration::from_millis;
        let mut c = Clock::new(ms(500), s(1000, 50_000));
        assert_eq!(c.at(s(1100, 50_100)), ms(100));
        // Realtime a little ahead (NTP slewing): ignored.
        assert_eq!(c.at(s(1200, 50_500)), ms(200));
        // Realtime stepped back: ignored, and never a step back.
        assert_eq!(c.at(s(1300, 40_000)), ms(300));
        // Every clock stopped for 3 s, realtime corrected on resume: the gap is added.
        assert_eq!(c.at(s(1310, 43_010)), ms(310 + 3000));
        assert_eq!(c.at(s(1400, 43_100)), ms(400 + 3000));
    }

    #[test]
    fn kernel_ends_are_relative_to_now() {
        let before = monotonic_ns();
        let end = Clock::kernel_ns(Duration::from_secs(5), Duration::from_secs(2));
        let after = monotonic_ns();
        assert!(end >= before + 3_000_000_000 && end <= after + 3_000_000_000);
        // An end already past is now: fenced at once.
        let past = Clock::kernel_ns(Duration::from_secs(1), Duration::from_secs(2));
        assert!(past >= after && past <= monotonic_ns());
    }
}
