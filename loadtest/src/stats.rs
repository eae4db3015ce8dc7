//! Measurement primitives: latency histograms (HdrHistogram, sharded so that thousands of
//! client tasks can record without contending on one lock), percentile summaries, and per-client
//! `seq` gap detection.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (values above are clamped): 10 minutes.
const MAX_US: u64 = 600_000_000;

/// A new histogram of microseconds with 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Histograms split into shards; a recorder picks its shard once.
pub struct Sharded {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Sharded {
    pub fn new(n: usize) -> Self {
        Self {
            shards: (0..n.max(1)).map(|_| Mutex::new(histogram())).collect(),
        }
    }

    /// Records `value_us` in shard `shard % n`.
    pub fn record(&self, shard: usize, value_us: u64) {
        let mut h = self.shards[shard % self.shards.len()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.saturating_record(value_us.clamp(1, MAX_US));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut out = histogram();
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = out.add(&*h);
        }
        out
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A histogram as text (HdrHistogram V2 deflate, base64), to cross process boundaries.
pub fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    let mut buf = Vec::new();
    let _ = V2DeflateSerializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// The inverse of [`encode`].
///
/// # Errors
/// When the text is not an encoded histogram.
pub fn decode(s: &str) -> anyhow::Result<Histogram<u64>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    let h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..])?;
    Ok(h)
}

/// Follows one client's event `seq`s: counts the ones it never saw (gaps) and the ones it saw
/// twice or out of order.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    last: Option<u64>,
    pub events: u64,
    pub missing: u64,
    pub duplicates: u64,
}

impl SeqTracker {
    /// Starts from the `seq` of the welcome frame: the next event expected is `seq + 1`.
    pub fn start(&mut self, seq: u64) {
        if self.last.is_none() {
            self.last = Some(seq);
        }
    }

    pub fn last(&self) -> Option<u64> {
        self.last
    }

    pub fn see(&mut self, seq: u64) {
        self.events += 1;
        match self.last {
            Some(last) if seq <= last => self.duplicates += 1,
            Some(last) => {
                self.missing += seq - last - 1;
                self.last = Some(seq);
            }
            None => self.last = Some(seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).expect("record");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }

    #[test]
    fn histograms_round_trip_and_shards_merge() {
        let s = Sharded::new(4);
        for i in 0..100u64 {
            s.record(i as usize, 1000 + i);
        }
        let m = s.merged();
        assert_eq!(m.len(), 100);
        let back = decode(&encode(&m)).expect("decode");
        assert_eq!(back.len(), 100);
        assert_eq!(back.max(), m.max());
        assert!(decode("not base64!").is_err());
    }

    #[test]
    fn gaps_and_duplicates() {
        let mut t = SeqTracker::default();
        t.start(10);
        for seq in [11, 12, 15, 15, 14, 16] {
            t.see(seq);
        }
        assert_eq!(t.events, 6);
        assert_eq!(t.missing, 2, "13 and 14 were missing when 15 arrived");
        assert_eq!(t.duplicates, 2, "15 again, and 14 late");
        assert_eq!(t.last(), Some(16));
        let mut fresh = SeqTracker::default();
        fresh.see(5);
        fresh.see(6);
        assert_eq!(
            fresh.missing, 0,
            "without a welcome, the first event sets the start"
        );
    }
}
