//! Summaries of timed samples (median and spread) and the Wharf/dockerd ratio: pure
//! arithmetic, so the table's figures are unit-tested apart from any daemon.

/// Median and spread of one series of samples (seconds, or MiB for memory).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The median (mean of the two middle samples for an even count).
    pub median: f64,
    /// 10th percentile (nearest rank): the low end of the spread.
    pub p10: f64,
    /// 90th percentile (nearest rank): the high end of the spread.
    pub p90: f64,
    /// How many samples.
    pub n: usize,
}

impl Summary {
    /// Summarise `samples`; `None` when there are none. Call once per case and engine.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let at = |q: f64| v[((n as f64 - 1.0) * q).round() as usize];
        Some(Summary {
            median,
            p10: at(0.1),
            p90: at(0.9),
            n,
        })
    }

    /// The one-sample summary of a single measurement (memory figures).
    pub fn single(x: f64) -> Summary {
        Summary {
            median: x,
            p10: x,
            p90: x,
            n: 1,
        }
    }
}

/// `wharf / dockerd` of two medians; `None` when dockerd's is not positive.
pub fn ratio(wharf: f64, dockerd: f64) -> Option<f64> {
    (dockerd > 0.0).then(|| wharf / dockerd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_odd_and_even_series() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.p10, s.p90, s.n), (3.0, 1.0, 5.0, 3));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        let ten: Vec<f64> = (1..=11).map(f64::from).collect();
        let s = Summary::of(&ten).unwrap();
        assert_eq!((s.median, s.p10, s.p90), (6.0, 2.0, 10.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_refuses_a_zero_denominator() {
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
