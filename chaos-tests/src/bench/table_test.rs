//! Unit tests of the table: verdicts against dockerd targets and the no-regression
//! bound, and the rendered Markdown.

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

fn row(subject: Side, baseline: Side, target: Target, floor: Option<f64>) -> Row {
    Row {
        case: "`docker run --rm busybox true`".into(),
        unit: Unit::Seconds,
        subject,
        baseline,
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
    let md = render(&rows, Comparison::Dockerd);
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
        subject: Side::Measured(Summary::single(40.0), Some("RSS 60.0 MiB".into())),
        baseline: Side::NotApplicable("--bridge none".into()),
        floor: None,
        target: Target::default(),
    };
    let md = render(&[r], Comparison::Dockerd);
    assert!(
        md.contains("| 40.0 MiB; RSS 60.0 MiB | n/a (--bridge none) |"),
        "{md}"
    );
}

#[test]
fn regression_allows_ten_percent_or_five_ms() {
    let b = Regression::ISSUE_16;
    let none = Target::default();
    // 20% slower but only 4 ms: ok; 8% slower by 8 ms: ok.
    assert_eq!(
        b.verdict(&row(secs(0.024), secs(0.020), none, None)),
        Verdict::Met
    );
    assert_eq!(
        b.verdict(&row(secs(0.108), secs(0.100), none, None)),
        Verdict::Met
    );
    // Faster is always ok.
    assert_eq!(
        b.verdict(&row(secs(0.05), secs(0.10), none, None)),
        Verdict::Met
    );
    // 20% and 10 ms slower: over, both bounds named.
    assert_eq!(
        b.verdict(&row(secs(0.060), secs(0.050), none, None)),
        Verdict::Missed(vec!["+20.0% > 10%".into(), "+10.0 ms > 5 ms".into()])
    );
    let failed = row(Side::Failed("boom".into()), secs(0.05), none, None);
    assert_eq!(b.verdict(&failed), Verdict::Unknown);
}

#[test]
fn regression_of_memory_has_no_time_bound() {
    let mem = |new: f64, old: f64| Row {
        case: "idle memory".into(),
        unit: Unit::Mib,
        subject: Side::Measured(Summary::single(new), None),
        baseline: Side::Measured(Summary::single(old), None),
        floor: None,
        target: Target::default(),
    };
    let b = Regression::ISSUE_16;
    assert_eq!(b.verdict(&mem(33.0, 31.0)), Verdict::Met);
    // 0.004 MiB more is not "within 5 ms": only the ratio counts.
    assert_eq!(
        b.verdict(&mem(0.024, 0.020)),
        Verdict::Missed(vec!["+20.0% > 10%".into()])
    );
    let md = render(&[mem(40.0, 30.0)], Comparison::OldWharf(b));
    assert!(
        md.contains("| ≤ old × 1.1 | **over** (+33.3% > 10%) |"),
        "{md}"
    );
}

#[test]
fn old_wharf_table_names_columns_new_and_old() {
    let t = Target {
        max_ratio: Some(0.3),
        max_over_floor: None,
    };
    let rows = vec![
        row(secs(0.0800), secs(0.0790), t, Some(0.03)),
        row(secs(0.0900), secs(0.0700), t, None),
    ];
    let md = render(&rows, Comparison::OldWharf(Regression::ISSUE_16));
    let lines: Vec<&str> = md.lines().collect();
    assert!(
        lines[0].starts_with("| case | new median (p10–p90) | old median (p10–p90) | new/old | bound | result | floor | new − floor |"),
        "{md}"
    );
    // The dockerd target (≤ 0.3) is not what an old-wharf row is judged by.
    assert!(
        lines[2].contains("| 1.01 | ≤ old × 1.1 or ≤ old + 5 ms | ok |"),
        "{md}"
    );
    assert!(
        lines[3].contains(
            "| 1.29 | ≤ old × 1.1 or ≤ old + 5 ms | **over** (+28.6% > 10%, +20.0 ms > 5 ms) |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "\nOver the bound: `docker run --rm busybox true` (+28.6% > 10%, +20.0 ms > 5 ms).\n"
        ),
        "{md}"
    );
}
