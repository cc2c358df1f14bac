//! Kubernetes resource quantities ("100m", "0.5", "128Mi", "1G", "2e3").

/// The value of a quantity in base units (cores for cpu, bytes for memory).
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0f64.powi(2)),
        ("Gi", 1024.0f64.powi(3)),
        ("Ti", 1024.0f64.powi(4)),
        ("Pi", 1024.0f64.powi(5)),
        ("Ei", 1024.0f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, mult) in suffixes {
        if let Some(num) = q.strip_suffix(s) {
            return num.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    q.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_table() {
        let cases = [
            ("100m", Some(0.1)),
            ("2", Some(2.0)),
            ("0.5", Some(0.5)),
            ("128Mi", Some(134217728.0)),
            ("1G", Some(1e9)),
            ("2e3", Some(2000.0)),
            ("1Ki", Some(1024.0)),
            ("abc", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(super::parse(q), want, "{q}");
        }
    }
}
