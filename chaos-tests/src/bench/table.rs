//! The side-by-side table: one [`Row`] per case with both engines' figures, the ratio
//! Wharf/dockerd, the target, the floor, and a verdict, rendered as Markdown.
//! Pure: the harness fills rows, [`render`] turns them into the text written to the file
//! and pasted into the README.

use super::stats::{ratio, Summary};

/// What a row's figures count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Wall-clock seconds.
    Seconds,
    /// Memory, MiB.
    Mib,
}

/// One engine's outcome in a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Side {
    /// Measured; the note says more (e.g. RSS beside PSS).
    Measured(Summary, Option<String>),
    /// The case failed on this engine; the message says why.
    Failed(String),
    /// The case does not apply to this engine (e.g. bridge on a `--bridge none` dockerd).
    NotApplicable(String),
}

impl Side {
    fn median(&self) -> Option<f64> {
        match self {
            Side::Measured(s, _) => Some(s.median),
            _ => None,
        }
    }
}

/// The lowest time any engine could reach for the case, measured in the same run.
#[derive(Clone, Debug, PartialEq)]
pub struct Floor {
    /// Seconds.
    pub seconds: f64,
    /// What it is made of, e.g. "CLI 0.010 + raw 0.009".
    pub what: String,
}

/// The target for a row; every bound given must hold for "met".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Target {
    /// Largest acceptable Wharf/dockerd ratio of medians.
    pub max_ratio: Option<f64>,
    /// Largest acceptable Wharf median minus floor, seconds.
    pub max_over_floor: Option<f64>,
}

/// One case of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was run, e.g. "`docker run --rm busybox true`".
    pub case: String,
    /// Unit of both sides' figures.
    pub unit: Unit,
    /// Wharf's outcome.
    pub wharf: Side,
    /// dockerd's outcome.
    pub dockerd: Side,
    /// The floor, where one exists.
    pub floor: Option<Floor>,
    /// The target, if any.
    pub target: Target,
}

/// How a row stands against its target.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No target for this row.
    None,
    /// Every bound holds.
    Met,
    /// These bounds were missed.
    Missed(Vec<String>),
    /// A side failed, so the target cannot be judged.
    Unknown,
}

impl Row {
    /// Wharf's median over dockerd's, when both were measured.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.wharf.median()?, self.dockerd.median()?)
    }

    /// Wharf's median minus the floor, when both exist.
    pub fn over_floor(&self) -> Option<f64> {
        Some(self.wharf.median()? - self.floor.as_ref()?.seconds)
    }

    /// Judge the row against its target.
    pub fn verdict(&self) -> Verdict {
        let t = self.target;
        if t.max_ratio.is_none() && t.max_over_floor.is_none() {
            return Verdict::None;
        }
        let mut missed = Vec::new();
        if let Some(max) = t.max_ratio {
            match self.ratio() {
                Some(r) if r <= max => {}
                Some(r) => missed.push(format!("ratio {r:.3} > {max}")),
                None => return Verdict::Unknown,
            }
        }
        if let Some(max) = t.max_over_floor {
            match self.over_floor() {
                Some(d) if d <= max => {}
                Some(d) => missed.push(format!("{d:.3} s over floor > {max}")),
                None => return Verdict::Unknown,
            }
        }
        if missed.is_empty() {
            Verdict::Met
        } else {
            Verdict::Missed(missed)
        }
    }
}

fn value(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Mib => format!("{x:.1} MiB"),
        Unit::Seconds if x.abs() < 0.1 => format!("{x:.4} s"),
        Unit::Seconds if x.abs() < 10.0 => format!("{x:.3} s"),
        Unit::Seconds => format!("{x:.1} s"),
    }
}

fn bare(x: f64, unit: Unit) -> String {
    let v = value(x, unit);
    v.trim_end_matches(" s")
        .trim_end_matches(" MiB")
        .to_string()
}

fn side(s: &Side, unit: Unit) -> String {
    match s {
        Side::Measured(sum, note) => {
            let mut out = value(sum.median, unit);
            if sum.n > 1 {
                out.push_str(&format!(
                    " ({}–{}, n={})",
                    bare(sum.p10, unit),
                    bare(sum.p90, unit),
                    sum.n
                ));
            }
            if let Some(n) = note {
                out.push_str(&format!("; {n}"));
            }
            out
        }
        Side::Failed(e) => format!("error: {}", one_line(e)),
        Side::NotApplicable(why) => format!("n/a ({why})"),
    }
}

/// A message fit for a table cell: the first line that names an error (else the first
/// line), no pipes, at most 120 characters.
fn one_line(e: &str) -> String {
    let mut lines = e.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.clone().next().unwrap_or("");
    let line = lines
        .find(|l| l.contains("rror") && !l.contains("DEPRECATED"))
        .unwrap_or(first);
    let mut s: String = line.replace('|', "/").chars().take(120).collect();
    if line.chars().count() > 120 {
        s.push('…');
    }
    s
}

fn target(t: &Target) -> String {
    match (t.max_ratio, t.max_over_floor) {
        (Some(r), Some(f)) => format!("≤ {r} and ≤ floor + {f} s"),
        (Some(r), None) => format!("≤ {r}"),
        (None, Some(f)) => format!("≤ floor + {f} s"),
        (None, None) => String::new(),
    }
}

/// The Markdown table of `rows` (header, one line per row) followed by a line naming the
/// missed targets, if any.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | Wharf median (p10–p90) | dockerd median (p10–p90) | Wharf/dockerd | target | result | floor | Wharf − floor |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut missed = Vec::new();
    for r in rows {
        let verdict = match r.verdict() {
            Verdict::None => String::new(),
            Verdict::Met => "met".to_string(),
            Verdict::Missed(why) => {
                missed.push(format!("{} ({})", r.case, why.join(", ")));
                format!("**missed** ({})", why.join(", "))
            }
            Verdict::Unknown => "not judged".to_string(),
        };
        let floor = r
            .floor
            .as_ref()
            .map(|f| format!("{} ({})", value(f.seconds, Unit::Seconds), f.what))
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.case,
            side(&r.wharf, r.unit),
            side(&r.dockerd, r.unit),
            r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            target(&r.target),
            verdict,
            floor,
            r.over_floor()
                .map(|d| format!("{d:+.4} s"))
                .unwrap_or_default(),
        ));
    }
    if !missed.is_empty() {
        out.push_str(&format!("\nMissed targets: {}.\n", missed.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(median: f64) -> Side {
        Side::Measured(
            Summary {
                median,
                p10: median * 0.9,
                p90: median * 1.2,
                n: 10,
            },
            None,
        )
    }

    fn row(wharf: Side, dockerd: Side, target: Target, floor: Option<f64>) -> Row {
        Row {
            case: "`docker run --rm busybox true`".into(),
            unit: Unit::Seconds,
            wharf,
            dockerd,
            floor: floor.map(|seconds| Floor {
                seconds,
                what: "CLI + raw".into(),
            }),
            target,
        }
    }

    #[test]
    fn verdict_needs_every_bound() {
        let t = Target {
            max_ratio: Some(0.3),
            max_over_floor: Some(0.05),
        };
        assert_eq!(
            row(secs(0.06), secs(0.3), t, Some(0.02)).verdict(),
            Verdict::Met
        );
        let missed = row(secs(0.10), secs(0.3), t, Some(0.02)).verdict();
        assert_eq!(
            missed,
            Verdict::Missed(vec![
                "ratio 0.333 > 0.3".into(),
                "0.080 s over floor > 0.05".into()
            ])
        );
        let failed = row(Side::Failed("boom".into()), secs(0.3), t, Some(0.02));
        assert_eq!(failed.verdict(), Verdict::Unknown);
        assert_eq!(
            row(secs(1.0), secs(2.0), Target::default(), None).verdict(),
            Verdict::None
        );
    }

    #[test]
    fn render_shows_errors_ratios_and_missed_targets() {
        let t = Target {
            max_ratio: Some(0.5),
            max_over_floor: None,
        };
        let rows = vec![
            row(secs(0.05), secs(0.2), t, Some(0.02)),
            row(
                Side::Failed(
                    "docker build: DEPRECATED: The legacy builder is deprecated\n  Install buildx\n\
                     Error response from daemon: page not found\nmore"
                        .into(),
                ),
                secs(2.0),
                t,
                None,
            ),
            row(secs(0.4), secs(0.2), t, None),
        ];
        let md = render(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[2].contains("| 0.0500 s (0.0450–0.0600, n=10) | 0.200 s"),
            "{md}"
        );
        assert!(
            lines[2].contains("| 0.25 | ≤ 0.5 | met | 0.0200 s (CLI + raw) | +0.0300 s |"),
            "{md}"
        );
        assert!(
            lines[3].contains("| error: Error response from daemon: page not found |"),
            "{md}"
        );
        assert!(lines[3].contains("| not judged |"), "{md}");
        assert!(lines[4].contains("**missed** (ratio 2.000 > 0.5)"), "{md}");
        assert!(md.contains("Missed targets: `docker run --rm busybox true` (ratio 2.000 > 0.5)."));
    }

    #[test]
    fn memory_cells_carry_their_note() {
        let r = Row {
            case: "idle memory".into(),
            unit: Unit::Mib,
            wharf: Side::Measured(Summary::single(40.0), Some("RSS 60.0 MiB".into())),
            dockerd: Side::NotApplicable("--bridge none".into()),
            floor: None,
            target: Target::default(),
        };
        let md = render(&[r]);
        assert!(
            md.contains("| 40.0 MiB; RSS 60.0 MiB | n/a (--bridge none) |"),
            "{md}"
        );
    }
}
