//! Scale to zero: the Deployment annotation that asks for it and the idle
//! window it names, parsed the same way by the API server's admission, the
//! controllers and the node's proxy.

use std::time::Duration;

/// A Deployment annotation: scale to zero after this long without requests
/// (a Go duration: `60s`, `1m30s`, `500ms`).
pub const SCALE_TO_ZERO_AFTER: &str = "skiff.dev/scale-to-zero-after";

/// Parse a Go-style duration (`300ms`, `1.5h`, `2h45m`, `0`). Negative or
/// malformed values are errors saying why.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration is required, e.g. \"60s\"".into());
    }
    if t.starts_with('-') {
        return Err(format!("{text:?} is negative; it must be 0 or more"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (e.g. \"60s\", \"1m30s\")"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "{text:?} has a number without a unit (ms, s, m, h)"
                ));
            }
            other => return Err(format!("{text:?} has an unknown unit {other:?}")),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("10").unwrap_err().contains("without a unit"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
    }
}
