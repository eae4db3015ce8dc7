//! Which connections the `:8090` accept loop keeps: at most `max_connections` at once, at most
//! `max_connections_per_ip` from one client address, and at most `accept_rate` new ones per
//! second (with `accept_burst`). A connection over a limit is closed at once, before anything is
//! read from it, and counted in `ovasabi_http_connections_refused_total{reason}`.
//!
//! The metrics and gRPC listeners are not counted here: with `max_connections` below the file
//! limit, what is left is their reserve, so `/healthz` and `/metrics` keep answering while
//! `:8090` is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use metrics::{counter, describe_counter, describe_gauge, gauge};

use crate::config::Config;

/// Connections open on the HTTP listener (REST and WebSocket).
pub const OPEN: &str = "ovasabi_http_connections";
/// Connections closed at accept, by `reason`: `total`, `per_ip` or `rate`.
pub const REFUSED: &str = "ovasabi_http_connections_refused_total";

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Total,
    /// Its address holds `max_connections_per_ip`.
    PerIp,
    /// More than `accept_rate` (plus `accept_burst`) connections came in.
    Rate,
}

impl Refusal {
    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerIp => "per_ip",
            Self::Rate => "rate",
        }
    }
}

/// The accept loop's gate. Not shared between loops: [`Admission::admit`] takes `&mut self`
/// (the rate bucket); the counts it shares with the [`Admitted`] guards.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    bucket: Bucket,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// An accepted connection's place, freed when the last clone is dropped. The connection's
/// task holds one, and each of its requests carries one (an extension), so that a WebSocket
/// session keeps the place after the upgrade has ended the HTTP connection's task.
#[derive(Clone)]
#[must_use = "the place is freed when this is dropped"]
pub struct Admitted {
    _place: Arc<Place>,
}

struct Place {
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Admission {
    pub fn new(config: &Config) -> Self {
        describe_gauge!(
            OPEN,
            "Connections open on the HTTP listener (REST and WebSocket)"
        );
        describe_counter!(
            REFUSED,
            "Connections to the HTTP listener closed at accept, by reason (total, per_ip, rate)"
        );
        Self {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            bucket: Bucket::new(config.accept_rate, config.accept_burst, Instant::now()),
            open: Arc::default(),
        }
    }

    /// Takes a place for a connection from `ip`, or says why there is none (counted).
    ///
    /// # Errors
    /// The [`Refusal`] when a limit is reached.
    pub fn admit(&mut self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let result = self.try_admit(ip.to_canonical(), Instant::now());
        if let Err(refusal) = result {
            counter!(REFUSED, "reason" => refusal.reason()).increment(1);
        }
        result
    }

    fn try_admit(&mut self, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        if !self.bucket.take(now) {
            return Err(Refusal::Rate);
        }
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        open.total += 1;
        gauge!(OPEN).set(open.total as f64);
        Ok(Admitted {
            _place: Arc::new(Place {
                ip,
                open: self.open.clone(),
            }),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
        gauge!(OPEN).set(open.total as f64);
    }
}

/// The counts stay right even if a holder panicked: every change is a single step.
fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn admission(total: usize, per_ip: usize, rate: f64, burst: u32) -> Admission {
        Admission::new(&Config {
            max_connections: total,
            max_connections_per_ip: per_ip,
            accept_rate: rate,
            accept_burst: burst,
            ..Config::default()
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_address_and_total_caps_refuse_until_a_place_is_freed() {
        let mut gate = admission(3, 2, 1e9, 1_000_000);
        let now = Instant::now();
        let a1 = gate.try_admit(A, now).expect("a1");
        let _a2 = gate.try_admit(A, now).expect("a2");
        assert_eq!(gate.try_admit(A, now).err(), Some(Refusal::PerIp));
        let _b1 = gate.try_admit(B, now).expect("b1");
        assert_eq!(gate.try_admit(B, now).err(), Some(Refusal::Total));
        drop(a1);
        let _b2 = gate.try_admit(B, now).expect("a place was freed");
        assert_eq!(gate.try_admit(A, now).err(), Some(Refusal::Total));
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let mut gate = admission(10, 1, 1e9, 1_000_000);
        let _a = gate.admit(A).expect("a");
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(gate.admit(mapped).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills() {
        let mut gate = admission(100, 100, 10.0, 3);
        let t0 = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| gate.try_admit(A, t0).expect("burst"))
            .collect();
        assert_eq!(gate.try_admit(A, t0).err(), Some(Refusal::Rate));
        // 10 per second: one more after 100 ms, not two.
        let t1 = t0 + Duration::from_millis(100);
        let _one = gate.try_admit(A, t1).expect("refilled");
        assert_eq!(gate.try_admit(A, t1).err(), Some(Refusal::Rate));
        drop(held);
    }
}
