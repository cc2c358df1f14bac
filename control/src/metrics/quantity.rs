//! Quantities written the way Kubernetes' `resource.Quantity.String()` writes
//! them (its canonical form), so metrics and tables read exactly as
//! metrics-server and kubectl show them: cpu from nanocores (`"2745362n"`,
//! `"5m"`, `"2"`), memory from bytes (`"28692Ki"`, `"1000000"`), custom metric
//! values in milli-units (`"2500m"`), and any quantity string re-written
//! (`"0.5"` → `"500m"`).
//!
//! The rules are Go's: a decimal value is written as an integer mantissa
//! times a power of ten that is a multiple of three (suffixes n, u, m, k, M,
//! G, T, P, E); a binary (`Ki`…`Ei`) value of at least 1024 that is an
//! integer is written with the largest power of 1024 dividing it; precision
//! below a nano is rounded up.

/// How a quantity is written (Go's `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// An exact value: `mantissa × 10^exp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dec {
    mantissa: i128,
    exp: i32,
}

/// CPU given in nanocores, as metrics-server writes it.
pub fn cpu(nanocores: u64) -> String {
    format(
        Dec {
            mantissa: i128::from(nanocores),
            exp: -9,
        },
        Format::DecimalSi,
    )
}

/// Memory given in bytes, as metrics-server writes it.
pub fn memory(bytes: u64) -> String {
    format(
        Dec {
            mantissa: i128::from(bytes),
            exp: 0,
        },
        Format::BinarySi,
    )
}

/// A measured value rounded to milli-units (`2.5` → `"2500m"`, `5.0` →
/// `"5"`), as custom metrics adapters write theirs. Not-a-number and
/// infinities are 0 and the largest value.
pub fn milli(v: f64) -> String {
    let m = if v.is_nan() {
        0
    } else {
        // `as` saturates, so huge values stay finite.
        (v * 1000.0).round() as i64
    };
    format(
        Dec {
            mantissa: i128::from(m),
            exp: -3,
        },
        Format::DecimalSi,
    )
}

/// A quantity string in canonical form, or `None` when it is not a quantity.
pub fn canonical(q: &str) -> Option<String> {
    let (d, f) = parse(q)?;
    Some(format(d, f))
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Parse a quantity exactly (`[+-]digits[.digits][suffix]`).
fn parse(q: &str) -> Option<(Dec, Format)> {
    let q = q.trim();
    let (neg, body) = match q.as_bytes().first()? {
        b'-' => (true, &q[1..]),
        b'+' => (false, &q[1..]),
        _ => (false, q),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(c - b'0'))?;
    }
    let mut exp = -i32::try_from(frac.len()).ok()?;
    let mut format = Format::DecimalSi;
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let decimal = [
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("", 0),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    if let Some(i) = binary.iter().position(|s| *s == suffix) {
        format = Format::BinarySi;
        let factor = 1024i128.checked_pow(u32::try_from(i + 1).ok()?)?;
        mantissa = mantissa.checked_mul(factor)?;
    } else if let Some((_, e)) = decimal.iter().find(|(s, _)| *s == suffix) {
        exp += e;
    } else if let Some(e) = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    {
        format = Format::DecimalExponent;
        exp = exp.checked_add(e.parse::<i32>().ok()?)?;
    } else {
        return None;
    }
    if neg {
        mantissa = -mantissa;
    }
    Some((Dec { mantissa, exp }, format))
}

/// Strip the factors of `base` from `v`: (rest, how many).
fn remove_factors(mut v: i128, base: i128) -> (i128, u32) {
    let mut n = 0;
    if v == 0 {
        return (0, 0);
    }
    while v % base == 0 {
        v /= base;
        n += 1;
    }
    (v, n)
}

/// Round up (away from zero) to at most nano precision, as Go does.
fn round_to_nano(d: Dec) -> Dec {
    if d.exp >= -9 {
        return d;
    }
    let Some(div) = u32::try_from(-9 - d.exp).ok().and_then(pow10) else {
        return Dec {
            mantissa: d.mantissa.signum(),
            exp: -9,
        };
    };
    let q = d.mantissa / div;
    let r = d.mantissa % div;
    Dec {
        mantissa: q + r.signum(),
        exp: -9,
    }
}

/// The value as an integer, when it is one.
fn as_integer(d: Dec) -> Option<i128> {
    if d.exp >= 0 {
        d.mantissa.checked_mul(pow10(d.exp.unsigned_abs())?)
    } else {
        let div = pow10(d.exp.unsigned_abs())?;
        (d.mantissa % div == 0).then(|| d.mantissa / div)
    }
}

fn format(d: Dec, mut f: Format) -> String {
    let d = round_to_nano(d);
    if d.mantissa == 0 {
        return "0".into();
    }
    if f == Format::BinarySi {
        match as_integer(d) {
            Some(v) if v.abs() >= 1024 => {
                let (rest, n) = remove_factors(v, 1024);
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                if let Some(s) = suffixes.get(n as usize) {
                    return format!("{rest}{s}");
                }
                f = Format::DecimalSi;
            }
            _ => f = Format::DecimalSi,
        }
    }
    let (mut mantissa, n) = remove_factors(d.mantissa, 10);
    let mut exp = d.exp + n as i32;
    // Down to a multiple of three.
    match exp.rem_euclid(3) {
        1 => {
            mantissa *= 10;
            exp -= 1;
        }
        2 => {
            mantissa *= 100;
            exp -= 2;
        }
        _ => {}
    }
    let suffix = match (f, exp) {
        (_, 0) => String::new(),
        (Format::DecimalExponent, e) => format!("e{e}"),
        (_, -9) => "n".into(),
        (_, -6) => "u".into(),
        (_, -3) => "m".into(),
        (_, 3) => "k".into(),
        (_, 6) => "M".into(),
        (_, 9) => "G".into(),
        (_, 12) => "T".into(),
        (_, 15) => "P".into(),
        (_, 18) => "E".into(),
        (_, e) => format!("e{e}"),
    };
    format!("{mantissa}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_as_metrics_server_writes_them() {
        let cpu_cases = [
            (0, "0"),
            (2745362, "2745362n"),
            (5_000_000, "5m"),
            (1_500_000_000, "1500m"),
            (2_000_000_000, "2"),
            (123_456_789, "123456789n"),
            (10_000, "10u"),
        ];
        for (n, want) in cpu_cases {
            assert_eq!(cpu(n), want, "{n}");
        }
        let mem_cases = [
            (0, "0"),
            (126_418_944, "123456Ki"),
            (1_000_000, "1000000"),
            (1000, "1k"),
            (512, "512"),
            (1 << 30, "1Gi"),
            (3 << 20, "3Mi"),
        ];
        for (b, want) in mem_cases {
            assert_eq!(memory(b), want, "{b}");
        }
    }

    #[test]
    fn milli_values() {
        let cases = [
            (2.5, "2500m"),
            (5.0, "5"),
            (0.0, "0"),
            (0.1234, "123m"),
            (1500.0, "1500"),
            (12000.0, "12k"),
            (f64::NAN, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(milli(v), want, "{v}");
        }
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("0.5", Some("500m")),
            ("100m", Some("100m")),
            ("10Mi", Some("10Mi")),
            ("1024Ki", Some("1Mi")),
            ("1.5Gi", Some("1536Mi")),
            ("0.5Ki", Some("512")),
            ("1500", Some("1500")),
            ("2e3", Some("2e3")),
            ("1500e0", Some("1500")),
            ("1000000", Some("1M")),
            ("2500m", Some("2500m")),
            ("-2", Some("-2")),
            ("5", Some("5")),
            ("1.0000000001", Some("1000000001n")),
            ("0", Some("0")),
            ("abc", None),
            ("", None),
            ("1.2.3", None),
        ];
        for (q, want) in cases {
            assert_eq!(canonical(q).as_deref(), want, "{q}");
        }
    }
}
