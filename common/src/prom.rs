//! A tiny metrics registry rendered in the Prometheus text exposition format
//! 0.0.4: counters, gauges and histograms, their labelled families, and
//! collect-on-scrape metrics (a closure called at render time). Used by the API
//! server's and the node agent's `GET /metrics`.
//!
//! **Metrics are updated with relaxed atomics only (a family's child map is
//! behind a mutex, taken once per child lookup); nothing is computed until a
//! scrape renders the registry.** A histogram keeps one count per bucket and
//! derives its `+Inf` bucket and `_count` from them at render time, so a
//! rendered histogram is always self-consistent.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `Content-Type` of a rendered registry.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus client's default histogram buckets, in seconds.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }

    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (an `f64` kept as its bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn new() -> Gauge {
        Gauge::default()
    }

    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn add(&self, d: f64) {
        add_f64(&self.0, d);
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn dec(&self) {
        self.add(-1.0);
    }
}

fn add_f64(cell: &AtomicU64, d: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + d).to_bits())
    });
}

/// Observations counted into fixed buckets (upper bounds, inclusive), with
/// their sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    /// One count per bound, plus the overflow (`+Inf`) count last; not
    /// cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds`, which must be finite and strictly increasing
    /// (panics otherwise: bounds are fixed at build time).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram::with_bounds(check_bounds(bounds))
    }

    fn with_bounds(bounds: Arc<[f64]>) -> Histogram {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = if v.is_nan() {
            self.bounds.len()
        } else {
            self.bounds.partition_point(|b| *b < v)
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        add_f64(&self.sum, v);
    }

    /// Observe a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }
}

fn check_bounds(bounds: &[f64]) -> Arc<[f64]> {
    assert!(
        bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
        "histogram bounds must be finite and strictly increasing: {bounds:?}"
    );
    bounds.into()
}

/// A labelled family: label values → child metric, children created on first
/// use. See [`CounterVec`], [`GaugeVec`], [`HistogramVec`].
pub struct MetricVec<T> {
    labels: Vec<String>,
    make: Box<dyn Fn() -> T + Send + Sync>,
    children: Mutex<BTreeMap<Vec<String>, Arc<T>>>,
}

/// Counters by label values.
pub type CounterVec = MetricVec<Counter>;
/// Gauges by label values.
pub type GaugeVec = MetricVec<Gauge>;
/// Histograms (all with the same bounds) by label values.
pub type HistogramVec = MetricVec<Histogram>;

impl<T> std::fmt::Debug for MetricVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricVec")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl<T> MetricVec<T> {
    fn build(labels: &[&str], make: impl Fn() -> T + Send + Sync + 'static) -> MetricVec<T> {
        MetricVec {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            make: Box::new(make),
            children: Mutex::default(),
        }
    }

    /// The label names.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The child for these label values (one per label name, in order; panics
    /// on a count mismatch), created if new.
    pub fn with_label_values(&self, values: &[&str]) -> Arc<T> {
        assert_eq!(
            values.len(),
            self.labels.len(),
            "label values {values:?} for labels {:?}",
            self.labels
        );
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut children = self.children.lock().unwrap();
        children
            .entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    /// Drop the child of these label values; whether there was one.
    pub fn remove(&self, values: &[&str]) -> bool {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.children.lock().unwrap().remove(&key).is_some()
    }

    /// Drop every child.
    pub fn reset(&self) {
        self.children.lock().unwrap().clear();
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<T>)> {
        let children = self.children.lock().unwrap();
        children
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl MetricVec<Counter> {
    pub fn new(labels: &[&str]) -> CounterVec {
        MetricVec::build(labels, Counter::new)
    }
}

impl MetricVec<Gauge> {
    pub fn new(labels: &[&str]) -> GaugeVec {
        MetricVec::build(labels, Gauge::new)
    }

    /// Replace every child at once (one lock, so a concurrent scrape sees
    /// either the old set or the new one).
    pub fn set_all(&self, values: impl IntoIterator<Item = (Vec<String>, f64)>) {
        let fresh: BTreeMap<Vec<String>, Arc<Gauge>> = values
            .into_iter()
            .map(|(k, v)| {
                let g = Gauge::new();
                g.set(v);
                (k, Arc::new(g))
            })
            .collect();
        *self.children.lock().unwrap() = fresh;
    }
}

impl MetricVec<Histogram> {
    pub fn new(labels: &[&str], bounds: &[f64]) -> HistogramVec {
        let bounds = check_bounds(bounds);
        MetricVec::build(labels, move || Histogram::with_bounds(bounds.clone()))
    }
}

/// Samples a collect-on-scrape metric returns: label values (in the order of
/// the label names it was registered with) and a value.
pub type Samples = Vec<(Vec<String>, f64)>;

type Collect = Box<dyn Fn() -> Samples + Send + Sync>;

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
    CounterVec(Arc<CounterVec>),
    GaugeVec(Arc<GaugeVec>),
    HistogramVec(Arc<HistogramVec>),
    Collect { labels: Vec<String>, f: Collect },
}

struct Entry {
    name: String,
    help: String,
    kind: Kind,
    metric: Metric,
}

/// Named families, rendered in registration order.
///
/// **A name is registered once: registering it again panics, as does a name
/// that is not a valid Prometheus metric name.** Collect closures run while
/// the registry renders, so they must not render or register themselves.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().unwrap();
        f.debug_list()
            .entries(entries.iter().map(|e| &e.name))
            .finish()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn add(&self, name: &str, help: &str, kind: Kind, metric: Metric) {
        assert!(valid_name(name), "invalid metric name {name:?}");
        let mut entries = self.entries.lock().unwrap();
        assert!(
            entries.iter().all(|e| e.name != name),
            "metric {name} registered twice"
        );
        entries.push(Entry {
            name: name.into(),
            help: help.into(),
            kind,
            metric,
        });
    }

    pub fn counter(&self, name: &str, help: &str) -> Arc<Counter> {
        let m = Arc::new(Counter::new());
        self.add(name, help, Kind::Counter, Metric::Counter(m.clone()));
        m
    }

    pub fn gauge(&self, name: &str, help: &str) -> Arc<Gauge> {
        let m = Arc::new(Gauge::new());
        self.add(name, help, Kind::Gauge, Metric::Gauge(m.clone()));
        m
    }

    pub fn histogram(&self, name: &str, help: &str, bounds: &[f64]) -> Arc<Histogram> {
        let m = Arc::new(Histogram::new(bounds));
        self.add(name, help, Kind::Histogram, Metric::Histogram(m.clone()));
        m
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Arc<CounterVec> {
        let m = Arc::new(CounterVec::new(labels));
        self.add(name, help, Kind::Counter, Metric::CounterVec(m.clone()));
        m
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Arc<GaugeVec> {
        let m = Arc::new(GaugeVec::new(labels));
        self.add(name, help, Kind::Gauge, Metric::GaugeVec(m.clone()));
        m
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        bounds: &[f64],
    ) -> Arc<HistogramVec> {
        let m = Arc::new(HistogramVec::new(labels, bounds));
        self.add(name, help, Kind::Histogram, Metric::HistogramVec(m.clone()));
        m
    }

    /// A gauge family whose samples `f` returns at each render.
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        f: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        self.collect(name, help, Kind::Gauge, labels, f);
    }

    /// A counter family whose (cumulative) samples `f` returns at each render.
    pub fn counter_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        f: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        self.collect(name, help, Kind::Counter, labels, f);
    }

    fn collect(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[&str],
        f: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        let labels = labels.iter().map(|l| l.to_string()).collect();
        let f = Box::new(f);
        self.add(name, help, kind, Metric::Collect { labels, f });
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let entries = self.entries.lock().unwrap();
        for e in entries.iter() {
            render_entry(&mut out, e);
        }
        out
    }
}

fn render_entry(out: &mut String, e: &Entry) {
    let name = &e.name;
    let _ = writeln!(out, "# HELP {name} {}", escape_help(&e.help));
    let _ = writeln!(out, "# TYPE {name} {}", e.kind.as_str());
    match &e.metric {
        Metric::Counter(c) => sample(out, name, &[], &[], &c.get().to_string()),
        Metric::Gauge(g) => sample(out, name, &[], &[], &fmt_f64(g.get())),
        Metric::Histogram(h) => histogram(out, name, &[], &[], h),
        Metric::CounterVec(v) => {
            for (values, c) in v.snapshot() {
                sample(out, name, &v.labels, &values, &c.get().to_string());
            }
        }
        Metric::GaugeVec(v) => {
            for (values, g) in v.snapshot() {
                sample(out, name, &v.labels, &values, &fmt_f64(g.get()));
            }
        }
        Metric::HistogramVec(v) => {
            for (values, h) in v.snapshot() {
                histogram(out, name, &v.labels, &values, &h);
            }
        }
        Metric::Collect { labels, f } => {
            for (values, x) in f() {
                sample(out, name, labels, &values, &fmt_f64(x));
            }
        }
    }
}

/// `{a="x",b="y"` (no closing brace), or "" without labels.
fn label_prefix(names: &[String], values: &[String]) -> String {
    let mut s = String::new();
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        s.push(if i == 0 { '{' } else { ',' });
        let _ = write!(s, "{n}=\"{}\"", escape_label(v));
    }
    s
}

fn sample(out: &mut String, name: &str, names: &[String], values: &[String], value: &str) {
    let labels = label_prefix(names, values);
    let close = if labels.is_empty() { "" } else { "}" };
    let _ = writeln!(out, "{name}{labels}{close} {value}");
}

fn histogram(out: &mut String, name: &str, names: &[String], values: &[String], h: &Histogram) {
    let labels = label_prefix(names, values);
    let sep = if labels.is_empty() { "{" } else { "," };
    let mut cumulative = 0u64;
    let les = h.bounds.iter().map(|b| fmt_f64(*b)).chain(["+Inf".into()]);
    for (le, c) in les.zip(h.counts.iter()) {
        cumulative += c.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{labels}{sep}le=\"{le}\"}} {cumulative}");
    }
    let close = if labels.is_empty() { "" } else { "}" };
    let _ = writeln!(out, "{name}_sum{labels}{close} {}", fmt_f64(h.sum()));
    let _ = writeln!(out, "{name}_count{labels}{close} {cumulative}");
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_metrics() {
        let r = Registry::new();
        let c = r.counter("skiff_things_total", "Things seen.");
        let g = r.gauge("skiff_level", "A level\\with a backslash\nand a newline.");
        c.inc();
        c.inc_by(41);
        g.set(2.5);
        g.inc();
        g.dec();
        g.dec();
        assert_eq!(
            r.render(),
            "# HELP skiff_things_total Things seen.\n\
             # TYPE skiff_things_total counter\n\
             skiff_things_total 42\n\
             # HELP skiff_level A level\\\\with a backslash\\nand a newline.\n\
             # TYPE skiff_level gauge\n\
             skiff_level 1.5\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let r = Registry::new();
        let h = r.histogram("req_seconds", "Latency.", &[0.1, 1.0, 2.5]);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        h.observe_duration(Duration::from_millis(1500));
        assert_eq!(h.count(), 5);
        assert_eq!(
            r.render(),
            "# HELP req_seconds Latency.\n\
             # TYPE req_seconds histogram\n\
             req_seconds_bucket{le=\"0.1\"} 2\n\
             req_seconds_bucket{le=\"1\"} 3\n\
             req_seconds_bucket{le=\"2.5\"} 4\n\
             req_seconds_bucket{le=\"+Inf\"} 5\n\
             req_seconds_sum 5.15\n\
             req_seconds_count 5\n"
        );
    }

    #[test]
    fn labelled_families_sorted_and_escaped() {
        let r = Registry::new();
        let c = r.counter_vec("hits_total", "Hits.", &["verb", "code"]);
        c.with_label_values(&["list", "200"]).inc();
        c.with_label_values(&["get", "404"]).inc_by(2);
        c.with_label_values(&["list", "200"]).inc();
        let g = r.gauge_vec("odd", "Odd values.", &["v"]);
        g.with_label_values(&["a\\b\"c\nd"]).set(-1.0);
        let h = r.histogram_vec("lat_seconds", "Lat.", &["verb"], &[0.5]);
        h.with_label_values(&["watch"]).observe(0.25);
        h.with_label_values(&["watch"]).observe(1.0);
        assert_eq!(
            r.render(),
            "# HELP hits_total Hits.\n\
             # TYPE hits_total counter\n\
             hits_total{verb=\"get\",code=\"404\"} 2\n\
             hits_total{verb=\"list\",code=\"200\"} 2\n\
             # HELP odd Odd values.\n\
             # TYPE odd gauge\n\
             odd{v=\"a\\\\b\\\"c\\nd\"} -1\n\
             # HELP lat_seconds Lat.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{verb=\"watch\",le=\"0.5\"} 1\n\
             lat_seconds_bucket{verb=\"watch\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{verb=\"watch\"} 1.25\n\
             lat_seconds_count{verb=\"watch\"} 2\n"
        );
    }

    #[test]
    fn collect_on_scrape_and_set_all() {
        let r = Registry::new();
        let n = Arc::new(AtomicU64::new(1));
        let seen = n.clone();
        r.gauge_fn("term", "Term.", &[], move || {
            vec![(vec![], seen.load(Ordering::Relaxed) as f64)]
        });
        r.counter_fn("bytes_total", "Bytes.", &["dir"], || {
            vec![
                (vec!["in".into()], 7.0),
                (vec!["out".into()], f64::INFINITY),
            ]
        });
        let pods = r.gauge_vec("pods", "Pods.", &["phase"]);
        pods.with_label_values(&["Gone"]).set(9.0);
        pods.set_all([(vec!["Running".into()], 3.0), (vec!["Pending".into()], 0.0)]);
        n.store(5, Ordering::Relaxed);
        assert_eq!(
            r.render(),
            "# HELP term Term.\n\
             # TYPE term gauge\n\
             term 5\n\
             # HELP bytes_total Bytes.\n\
             # TYPE bytes_total counter\n\
             bytes_total{dir=\"in\"} 7\n\
             bytes_total{dir=\"out\"} +Inf\n\
             # HELP pods Pods.\n\
             # TYPE pods gauge\n\
             pods{phase=\"Pending\"} 0\n\
             pods{phase=\"Running\"} 3\n"
        );
    }

    #[test]
    fn empty_family_renders_its_header() {
        let r = Registry::new();
        r.counter_vec("none_total", "Nothing yet.", &["a"]);
        assert_eq!(
            r.render(),
            "# HELP none_total Nothing yet.\n# TYPE none_total counter\n"
        );
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_names_panic() {
        let r = Registry::new();
        r.counter("x", "");
        r.gauge("x", "");
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn invalid_names_panic() {
        Registry::new().counter("1x-y", "");
    }
}
