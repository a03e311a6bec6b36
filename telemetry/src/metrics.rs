//! Just enough Prometheus: relaxed atomic counters and fixed-bucket
//! histograms, written in the text exposition format. A metrics crate with a
//! registry would cost more binary than these few types, and recording stays
//! a single atomic add on the hot path.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency histogram with fixed upper bounds in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One bucket per bound plus the `+Inf` bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// Buckets for a request served on a LAN between two Pis: sub-millisecond
/// up to the default upstream deadline and a little past it.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// Something that can write its metrics in Prometheus text format: a
/// service's own, or a port's; the admin port serves them all.
pub trait Metrics: Send + Sync + 'static {
    fn render(&self, out: &mut Exposition);
}

impl<T: Metrics + ?Sized> Metrics for Arc<T> {
    fn render(&self, out: &mut Exposition) {
        (**self).render(out);
    }
}

/// Two sources of metrics on one port: a service's own, and its port's.
impl<A: Metrics, B: Metrics> Metrics for (A, B) {
    fn render(&self, out: &mut Exposition) {
        self.0.render(out);
        self.1.render(out);
    }
}

/// A Prometheus text-format document being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a metric family; its samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample; `labels` are `(name, value)` pairs whose values contain
    /// no quotes or backslashes (ours are all static identifiers).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.text.push_str(name);
        self.write_labels(labels, None);
        let _ = writeln!(self.text, " {value}");
        self
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, "counter", help).sample(name, &[], value)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, "gauge", help).sample(name, &[], value)
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> &mut Self {
        self.family(name, "histogram", help);
        let mut cumulative = 0;
        for (index, bucket) in histogram.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = histogram
                .bounds
                .get(index)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = write!(self.text, "{name}_bucket");
            self.write_labels(&[], Some(&bound));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(self.text, "{name}_sum {sum}\n{name}_count {cumulative}");
        self
    }

    pub fn into_string(self) -> String {
        self.text
    }

    fn write_labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        let le = le.map(|le| ("le", le));
        let mut pairs = labels.iter().copied().chain(le).peekable();
        if pairs.peek().is_none() {
            return;
        }
        self.text.push('{');
        for (i, (key, value)) in pairs.enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{key}=\"{value}\"");
        }
        self.text.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_labels_render_in_text_format() {
        let counter = Counter::default();
        counter.inc();
        counter.inc();
        let mut out = Exposition::default();
        out.counter("x_total", "Things.", counter.get());
        out.family("y_total", "counter", "Labelled.").sample(
            "y_total",
            &[("route", "/gcd"), ("status", "200")],
            3,
        );
        assert_eq!(
            out.into_string(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 2\n\
             # HELP y_total Labelled.\n# TYPE y_total counter\n\
             y_total{route=\"/gcd\",status=\"200\"} 3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(1));
        assert_eq!(histogram.count(), 3);
        let mut out = Exposition::default();
        out.histogram("lat_seconds", "Latency.", &histogram);
        let text = out.into_string();
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.01\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_sum 1.0055\n"), "{text}");
        assert!(text.contains("lat_seconds_count 3\n"), "{text}");
    }
}
