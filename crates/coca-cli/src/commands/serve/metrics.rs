//! `/metrics` in Prometheus' text format: requests and errors by route and status, latency histograms by route,
//! the sizes of the model's forward passes, the queue and the decode pool.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::batcher::{BatchStats, BATCH_SIZE_BUCKETS};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One route's latency histogram.
#[derive(Default)]
struct Histogram {
    /// Counts per bucket of [`LATENCY_BUCKETS`] (not cumulative), then the ones above the last.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

/// The request counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

/// The routes metrics are kept for; any other path counts as "other", so clients cannot grow the label set.
pub const ROUTES: [&str; 9] = [
    "/",
    "/health",
    "/embed",
    "/caption",
    "/classify",
    "/search",
    "/metrics",
    "/openapi.json",
    "/thumbnail",
];

/// The metrics label of a request path.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path || (**r == "/thumbnail" && path.starts_with("/thumbnail/")))
        .copied()
        .unwrap_or("other")
}

/// Gauges read when `/metrics` is asked for.
pub struct Gauges<'a> {
    /// The model worker's counters.
    pub batches: &'a BatchStats,
    /// Model requests admitted now.
    pub admitted: usize,
    /// The most admitted at once.
    pub max_queue: usize,
    /// Decode slots in use now.
    pub decoding: usize,
    /// Decode slots in all.
    pub decode_slots: usize,
}

impl Metrics {
    /// Count one answered request.
    pub fn record(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = latency.entry(route).or_default();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.counts[bucket] += 1;
        h.sum += seconds;
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out.push_str("# HELP coca_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE coca_requests_total counter\n");
        for ((route, status), n) in &requests {
            let _ = writeln!(
                out,
                "coca_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP coca_errors_total Requests answered with a 4xx or 5xx status.\n");
        out.push_str("# TYPE coca_errors_total counter\n");
        for ((route, status), n) in requests.iter().filter(|((_, s), _)| *s >= 400) {
            let _ = writeln!(
                out,
                "coca_errors_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP coca_request_duration_seconds Time to answer a request, by route.\n");
        out.push_str("# TYPE coca_request_duration_seconds histogram\n");
        for (route, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut cumulative = 0;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "coca_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "coca_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "coca_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}"
            );
        }
        let b = gauges.batches;
        out.push_str("# HELP coca_batch_items Items in each forward pass of the model.\n");
        out.push_str("# TYPE coca_batch_items histogram\n");
        let mut cumulative = 0;
        for i in 0..BATCH_SIZE_BUCKETS {
            cumulative += b.sizes[i].load(Ordering::Relaxed);
            let le = if i + 1 == BATCH_SIZE_BUCKETS {
                "+Inf".to_string()
            } else {
                (1u64 << i).to_string()
            };
            let _ = writeln!(out, "coca_batch_items_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "coca_batch_items_sum {}\ncoca_batch_items_count {}",
            b.items.load(Ordering::Relaxed),
            b.passes.load(Ordering::Relaxed)
        );
        let gauges = [
            (
                "coca_queue_jobs",
                "Jobs waiting for the model's worker.",
                b.queued.load(Ordering::Relaxed),
            ),
            (
                "coca_admitted_requests",
                "Model requests admitted (reading, decoding, queued or running).",
                gauges.admitted,
            ),
            (
                "coca_admitted_requests_max",
                "The most model requests admitted at once (--max-queue).",
                gauges.max_queue,
            ),
            (
                "coca_decode_slots_in_use",
                "Images being decoded now.",
                gauges.decoding,
            ),
            (
                "coca_decode_slots",
                "The most images decoded at once (from --decode-memory-mb).",
                gauges.decode_slots,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_unknown_paths_share_a_label() {
        let m = Metrics::default();
        m.record(route_label("/embed"), 200, Duration::from_millis(3));
        m.record(route_label("/embed"), 200, Duration::from_millis(300));
        m.record(route_label("/etc/passwd"), 404, Duration::from_millis(1));
        let stats = BatchStats::default();
        let text = m.render(&Gauges {
            batches: &stats,
            admitted: 0,
            max_queue: 4,
            decoding: 0,
            decode_slots: 2,
        });
        assert!(text.contains("coca_requests_total{route=\"/embed\",status=\"200\"} 2"));
        assert!(text.contains("coca_errors_total{route=\"other\",status=\"404\"} 1"));
        assert!(
            text.contains("coca_request_duration_seconds_bucket{route=\"/embed\",le=\"0.005\"} 1")
        );
        assert!(
            text.contains("coca_request_duration_seconds_bucket{route=\"/embed\",le=\"0.5\"} 2")
        );
        assert!(text.contains("coca_request_duration_seconds_count{route=\"/embed\"} 2"));
        assert!(text.contains("coca_decode_slots 2"));
    }
}
