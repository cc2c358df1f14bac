//! Crash points in the store's write path, for fault tests. Compiled in only
//! with the `failpoints` feature (the test suite's build turns it on); then
//! `SKIFF_FAILPOINTS="name[@N],..."` makes the server kill itself with
//! SIGKILL the `N`th time (default the first) it reaches point `name`.
//!
//! Points: `before-append` and `after-append` (log entries to sled),
//! `before-flush` and `after-flush` (the fsync that precedes any
//! acknowledgement), `during-snapshot-install` (state restored, log not yet
//! reset).

/// Reach point `name`: a no-op unless the `failpoints` feature is on and
/// the point is armed.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn reach(_name: &str) {}

#[cfg(feature = "failpoints")]
pub fn reach(name: &str) {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<HashMap<String, AtomicU64>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("SKIFF_FAILPOINTS").unwrap_or_default();
        let armed = parse(&spec);
        if !armed.is_empty() {
            tracing::warn!(points = %spec, "store failpoints armed");
        }
        armed
            .into_iter()
            .map(|(n, k)| (n, AtomicU64::new(k)))
            .collect()
    });
    if let Some(left) = armed.get(name)
        && left.fetch_sub(1, Ordering::AcqRel) == 1
    {
        tracing::warn!(point = name, "failpoint reached: crashing");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// `name[@N],...` as (name, N).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn parse(spec: &str) -> Vec<(String, u64)> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1).max(1)),
            None => (s.to_string(), 1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_points_and_counts() {
        assert_eq!(
            parse("before-flush@3, after-append,,x@0"),
            vec![
                ("before-flush".to_string(), 3),
                ("after-append".to_string(), 1),
                ("x".to_string(), 1)
            ]
        );
    }
}
