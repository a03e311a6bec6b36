//! Benchmark tools for the gcd services; nothing here ships in an image.
//!
//! - `grpc-load`: direct gRPC load against one gcd, printing req/s and
//!   latency percentiles.
//! - `http-ceiling`: the api's HTTP stack answering a fixed body with no
//!   gRPC hop behind it, to show how fast this machine can go at all.
//! - `startup-probe`: time from exec to the first successful request.
//!
//! `scripts/bench.py` (behind `scripts/bench.sh`) drives all three and
//! writes `results/bench.md`.

use std::time::Duration;

/// Latency samples in microseconds, summarised by nearest-rank percentiles.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            micros: Vec::with_capacity(capacity),
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.micros
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// Sorts the samples once; percentiles are read from the result.
    pub fn summarise(mut self) -> Summary {
        self.micros.sort_unstable();
        Summary {
            micros: self.micros,
        }
    }
}

/// Sorted latency samples.
#[derive(Debug, Clone)]
pub struct Summary {
    micros: Vec<u32>,
}

impl Summary {
    /// Nearest-rank percentile in microseconds (`p` in 0..=100); 0 when
    /// there are no samples.
    pub fn percentile(&self, p: f64) -> u32 {
        let n = self.micros.len();
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.micros[rank.clamp(1, n) - 1]
    }

    pub fn max(&self) -> u32 {
        self.micros.last().copied().unwrap_or(0)
    }

    pub fn mean(&self) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.iter().map(|&m| f64::from(m)).sum::<f64>() / self.micros.len() as f64
    }
}

/// Median of `values` (the mean of the middle two for an even count);
/// `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut latencies = Latencies::default();
        for micros in (1..=100).rev() {
            latencies.record(Duration::from_micros(micros));
        }
        let summary = latencies.summarise();
        assert_eq!(summary.percentile(50.0), 50);
        assert_eq!(summary.percentile(99.0), 99);
        assert_eq!(summary.percentile(100.0), 100);
        assert_eq!(summary.percentile(0.0), 1);
        assert_eq!(summary.max(), 100);
        assert!((summary.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn empty_summary_is_zero() {
        let summary = Latencies::default().summarise();
        assert_eq!(summary.percentile(99.0), 0);
        assert_eq!(summary.max(), 0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
