//! The side-by-side table: one [`Row`] per case with both engines' figures, their ratio,
//! the bound, the floor, and a verdict, rendered as Markdown. Two comparisons share it
//! ([`Comparison`]): Wharf against dockerd, judged by issue 8's targets, and a new wharf
//! against an old one, judged by issue 16's no-regression bound ([`Regression`]).
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

/// Issue 8's target for a row against dockerd; every bound given must hold for "met".
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
    /// The engine under test: Wharf, or the new wharf.
    pub subject: Side,
    /// What it is measured against: dockerd, or the old wharf.
    pub baseline: Side,
    /// The floor, where one exists.
    pub floor: Option<Floor>,
    /// Issue 8's target against dockerd, if any (not used against an old wharf).
    pub target: Target,
}

/// How a row stands against its bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No bound for this row.
    None,
    /// Every bound holds.
    Met,
    /// These bounds were missed.
    Missed(Vec<String>),
    /// A side failed, so the row cannot be judged.
    Unknown,
}

impl Row {
    /// The subject's median over the baseline's, when both were measured.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.subject.median()?, self.baseline.median()?)
    }

    /// The subject's median minus the floor, when both exist.
    pub fn over_floor(&self) -> Option<f64> {
        Some(self.subject.median()? - self.floor.as_ref()?.seconds)
    }

    /// Judge the row against its issue 8 target.
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

/// A no-regression bound of a new wharf against an old one: the new median may exceed
/// the old one by at most `max_ratio` of it, or by at most `max_excess` seconds (either
/// suffices; the seconds bound does not apply to memory).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Regression {
    /// Largest acceptable new/old ratio of medians, e.g. 1.1.
    pub max_ratio: f64,
    /// Largest acceptable new − old of medians, seconds, e.g. 0.005.
    pub max_excess: f64,
}

impl Regression {
    /// Issue 16: "within 10% or 5 ms of today's build".
    pub const ISSUE_16: Regression = Regression {
        max_ratio: 1.1,
        max_excess: 0.005,
    };

    /// Judge `row` (subject = new, baseline = old) against this bound.
    pub fn verdict(&self, row: &Row) -> Verdict {
        let (Some(new), Some(old)) = (row.subject.median(), row.baseline.median()) else {
            return Verdict::Unknown;
        };
        let Some(r) = ratio(new, old) else {
            return Verdict::Unknown;
        };
        let excess = new - old;
        let within_time = row.unit == Unit::Seconds && excess <= self.max_excess;
        if r <= self.max_ratio || within_time {
            return Verdict::Met;
        }
        let mut why = vec![format!(
            "{:+.1}% > {:.0}%",
            (r - 1.0) * 100.0,
            (self.max_ratio - 1.0) * 100.0
        )];
        if row.unit == Unit::Seconds {
            why.push(format!(
                "{:+.1} ms > {:.0} ms",
                excess * 1e3,
                self.max_excess * 1e3
            ));
        }
        Verdict::Missed(why)
    }

    fn describe(&self, unit: Unit) -> String {
        match unit {
            Unit::Seconds => format!(
                "≤ old × {} or ≤ old + {:.0} ms",
                self.max_ratio,
                self.max_excess * 1e3
            ),
            Unit::Mib => format!("≤ old × {}", self.max_ratio),
        }
    }
}

/// What the table compares: it names the columns and chooses how rows are judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    /// Wharf against Docker Engine, each row against its issue 8 [`Target`].
    Dockerd,
    /// A new wharf against an old one, every row against the [`Regression`] bound.
    OldWharf(Regression),
}

impl Comparison {
    /// The names of the subject's and the baseline's columns.
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Comparison::Dockerd => ("Wharf", "dockerd"),
            Comparison::OldWharf(_) => ("new", "old"),
        }
    }

    /// Judge `row` as this comparison does.
    pub fn verdict(&self, row: &Row) -> Verdict {
        match self {
            Comparison::Dockerd => row.verdict(),
            Comparison::OldWharf(bound) => bound.verdict(row),
        }
    }

    fn bound(&self, row: &Row) -> String {
        match self {
            Comparison::Dockerd => target(&row.target),
            Comparison::OldWharf(bound) => bound.describe(row.unit),
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

/// The Markdown table of `rows` as `cmp` names and judges them (header, one line per
/// row) followed by a line naming the rows that missed their bound, if any.
pub fn render(rows: &[Row], cmp: Comparison) -> String {
    let (s, b) = cmp.names();
    let (met, missed_word, missed_line) = match cmp {
        Comparison::Dockerd => ("met", "missed", "Missed targets"),
        Comparison::OldWharf(_) => ("ok", "over", "Over the bound"),
    };
    let mut out = format!(
        "| case | {s} median (p10–p90) | {b} median (p10–p90) | {s}/{b} | {} | result | floor | {s} − floor |\n\
         |---|---|---|---|---|---|---|---|\n",
        match cmp {
            Comparison::Dockerd => "target",
            Comparison::OldWharf(_) => "bound",
        }
    );
    let mut missed = Vec::new();
    for r in rows {
        let verdict = match cmp.verdict(r) {
            Verdict::None => String::new(),
            Verdict::Met => met.to_string(),
            Verdict::Missed(why) => {
                missed.push(format!("{} ({})", r.case, why.join(", ")));
                format!("**{missed_word}** ({})", why.join(", "))
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
            side(&r.subject, r.unit),
            side(&r.baseline, r.unit),
            r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            cmp.bound(r),
            verdict,
            floor,
            r.over_floor()
                .map(|d| format!("{d:+.4} s"))
                .unwrap_or_default(),
        ));
    }
    if !missed.is_empty() {
        out.push_str(&format!("\n{missed_line}: {}.\n", missed.join("; ")));
    }
    out
}

#[cfg(test)]
#[path = "table_test.rs"]
mod tests;
