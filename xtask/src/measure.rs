//! Measurement helpers the bench passes share: order statistics of samples, and
//! memory sizes from `/proc/PID/status`.

/// (min, median, max); NaN for no values.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let s = sorted(v);
    let mid = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (s[0], mid, s[s.len() - 1])
}

pub fn median(v: &[f64]) -> f64 {
    stats(v).1
}

/// The nearest-rank `p` quantile (`p` in 0..=1: 0.99 is p99, 1.0 the maximum); NaN
/// for no values.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let s = sorted(v);
    s[((s.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// A `kB` field of `/proc/PID/status` text (`"VmHWM"`, `"VmRSS"`); 0 when absent.
pub fn status_kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// [`status_kib`] of a running process; 0 when it is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(),
        field,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        assert_eq!(stats(&[3.0, 1.0, 2.0, 10.0]), (1.0, 2.5, 10.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan() && median(&[]).is_nan());
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t  678 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), 12345);
        assert_eq!(status_kib(s, "VmRSS"), 678);
        assert_eq!(status_kib(s, "VmSwap"), 0);
        assert!(proc_status_kib(std::process::id(), "VmRSS") > 0);
    }
}
