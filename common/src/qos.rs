//! A pod's QoS class, as Kubernetes' `GetPodQOS` computes it, shared by the
//! API server's defaulting and the node agent's status.
//!
//! **All containers count, init containers included; API defaulting is
//! applied first (an unset request takes the limit); quantities compare by
//! value ("1" equals "1000m") and zero quantities count as unset.**

use crate::quantity;

/// One container's CPU and memory requests and limits, as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Resources<'a> {
    pub cpu_request: Option<&'a str>,
    pub cpu_limit: Option<&'a str>,
    pub memory_request: Option<&'a str>,
    pub memory_limit: Option<&'a str>,
}

/// `BestEffort` when nothing requests or limits CPU or memory; `Guaranteed`
/// when every container limits both and the summed requests equal the summed
/// limits; `Burstable` otherwise.
pub fn qos_class<'a>(containers: impl IntoIterator<Item = Resources<'a>>) -> &'static str {
    let q = |s: Option<&str>| s.and_then(quantity::parse).filter(|v| *v != 0.0);
    // [cpu, memory] sums, and whether any container set them.
    let (mut requests, mut limits) = ([None::<f64>; 2], [None::<f64>; 2]);
    let mut guaranteed = true;
    for c in containers {
        let pairs = [
            (c.cpu_request, c.cpu_limit),
            (c.memory_request, c.memory_limit),
        ];
        for (i, (req, lim)) in pairs.into_iter().enumerate() {
            let lim = q(lim);
            if let Some(r) = q(req).or(lim) {
                *requests[i].get_or_insert(0.0) += r;
            }
            match lim {
                Some(l) => *limits[i].get_or_insert(0.0) += l,
                None => guaranteed = false,
            }
        }
    }
    if requests.iter().chain(&limits).all(Option::is_none) {
        return "BestEffort";
    }
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    guaranteed &= requests.iter().zip(&limits).all(|(r, l)| match (r, l) {
        (Some(r), Some(l)) => same(*r, *l),
        (None, None) => true,
        _ => false,
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r<'a>(cr: &'a str, cl: &'a str, mr: &'a str, ml: &'a str) -> Resources<'a> {
        let o = |s: &'a str| (!s.is_empty()).then_some(s);
        Resources {
            cpu_request: o(cr),
            cpu_limit: o(cl),
            memory_request: o(mr),
            memory_limit: o(ml),
        }
    }

    #[test]
    fn qos_table() {
        let cases: Vec<(Vec<Resources>, &str)> = vec![
            (vec![r("", "", "", "")], "BestEffort"),
            (vec![], "BestEffort"),
            (vec![r("", "1", "", "1Gi")], "Guaranteed"),
            (vec![r("1000m", "1", "1Gi", "1024Mi")], "Guaranteed"),
            (vec![r("500m", "1", "", "1Gi")], "Burstable"),
            (vec![r("1", "", "", "")], "Burstable"),
            (vec![r("", "1", "", "")], "Burstable"),
            (vec![r("", "1", "", "1Gi"), r("", "", "", "")], "Burstable"),
            (
                vec![r("", "1", "", "1Gi"), r("", "2", "", "2Gi")],
                "Guaranteed",
            ),
            (vec![r("0", "", "0", "")], "BestEffort"),
        ];
        for (cs, want) in cases {
            assert_eq!(qos_class(cs.clone()), want, "{cs:?}");
        }
    }
}
