//! The results of a run: one table per measurement (each with its baseline and the ratio
//! against it), the targets with PASS or MISS, and their Markdown and JSON forms.

use serde_json::{Value, json};
use std::time::Duration;

/// One measurement's table and its raw numbers.
pub struct Section {
    pub title: String,
    /// What was done, in a sentence or two, printed under the title.
    pub how: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    pub data: Value,
}

impl Section {
    pub fn new(title: impl Into<String>, how: impl Into<String>, columns: &[&'static str]) -> Self {
        Section {
            title: title.into(),
            how: how.into(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            data: json!({}),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Miss,
    /// `--quick`: timings are not judged.
    NotJudged,
    /// The measurement it needs did not run (`--only`) or cannot run yet.
    NotMeasured,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Miss => "MISS",
            Status::NotJudged => "not judged (--quick)",
            Status::NotMeasured => "not measured",
        }
    }
}

pub struct Target {
    pub name: String,
    pub limit: String,
    pub measured: String,
    pub status: Status,
    /// Other processes took this much CPU while it was measured: the verdict is unreliable.
    pub disturbed: Option<String>,
}

impl Target {
    fn verdict(&self) -> String {
        match &self.disturbed {
            Some(by) => format!(
                "{} (disturbed: others used {by} of a CPU)",
                self.status.label()
            ),
            None => self.status.label().to_owned(),
        }
    }
}

pub struct Report {
    pub quick: bool,
    /// Facts about the run: machine, pinning, limits, binaries.
    pub setup: Vec<(String, String)>,
    pub sections: Vec<Section>,
    pub targets: Vec<Target>,
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report {
            quick,
            setup: Vec::new(),
            sections: Vec::new(),
            targets: Vec::new(),
        }
    }

    pub fn fact(&mut self, key: &str, value: impl Into<String>) {
        self.setup.push((key.to_owned(), value.into()));
    }

    /// Judge a measured value against its target (not in quick mode).
    pub fn target(&mut self, name: &str, limit: &str, measured: String, met: bool) {
        let status = match (self.quick, met) {
            (true, _) => Status::NotJudged,
            (false, true) => Status::Pass,
            (false, false) => Status::Miss,
        };
        self.targets.push(Target {
            name: name.to_owned(),
            limit: limit.to_owned(),
            measured,
            status,
            disturbed: None,
        });
    }

    pub fn not_measured(&mut self, name: &str, limit: &str, why: &str) {
        self.targets.push(Target {
            name: name.to_owned(),
            limit: limit.to_owned(),
            measured: why.to_owned(),
            status: Status::NotMeasured,
            disturbed: None,
        });
    }

    pub fn misses(&self) -> usize {
        self.targets
            .iter()
            .filter(|t| t.status == Status::Miss)
            .count()
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mode = if self.quick { "quick (smoke)" } else { "full" };
        out.push_str(&format!("# toolgate benchmark results ({mode} run)\n\n"));
        for (k, v) in &self.setup {
            out.push_str(&format!("- **{k}:** {v}\n"));
        }
        out.push('\n');
        for s in &self.sections {
            out.push_str(&format!("## {}\n\n{}\n\n", s.title, s.how));
            if !s.rows.is_empty() {
                out.push_str(&table(&s.columns, &s.rows));
                out.push('\n');
            }
        }
        out.push_str("## Targets\n\n");
        let rows: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.limit.clone(),
                    t.measured.clone(),
                    t.verdict(),
                ]
            })
            .collect();
        out.push_str(&table(&["target", "limit", "measured", "status"], &rows));
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "mode": if self.quick { "quick" } else { "full" },
            "setup": self.setup.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
            "sections": self.sections.iter().map(|s| json!({
                "title": s.title,
                "how": s.how,
                "columns": s.columns,
                "rows": s.rows,
                "data": s.data,
            })).collect::<Vec<_>>(),
            "targets": self.targets.iter().map(|t| json!({
                "target": t.name,
                "limit": t.limit,
                "measured": t.measured,
                "status": t.status.label(),
                "disturbed_by_others_cpu": t.disturbed,
            })).collect::<Vec<_>>(),
        })
    }
}

fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", columns.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        columns
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    ));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

/// A duration for people: `87 µs`, `1.24 ms`, `2.1 s`.
pub fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// A run length for people: `10 s`, `300 ms`.
pub fn span(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.0} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A signed difference for people: `+45 µs`, `-3 µs`.
pub fn delta(a: Duration, b: Duration) -> String {
    let us = a.as_secs_f64() * 1e6 - b.as_secs_f64() * 1e6;
    let sign = if us < 0.0 { "-" } else { "+" };
    let d = Duration::from_secs_f64(us.abs() / 1e6);
    format!("{sign}{}", dur(d))
}

/// `a / b` as a ratio for people: `1.42×`.
pub fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "—".into();
    }
    format!("{:.2}×", a / b)
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ratios_read_well() {
        assert_eq!(dur(Duration::from_micros(87)), "87 µs");
        assert_eq!(dur(Duration::from_micros(1240)), "1.24 ms");
        assert_eq!(dur(Duration::from_millis(2100)), "2.10 s");
        assert_eq!(
            delta(Duration::from_micros(150), Duration::from_micros(100)),
            "+50 µs"
        );
        assert_eq!(
            delta(Duration::from_micros(100), Duration::from_micros(150)),
            "-50 µs"
        );
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(ratio(3.0, 0.0), "—");
    }

    #[test]
    fn quick_runs_judge_nothing() {
        let mut quick = Report::new(true);
        quick.target("t", "≤ 1", "2".into(), false);
        assert_eq!(quick.targets[0].status, Status::NotJudged);
        assert_eq!(quick.misses(), 0);
        let mut full = Report::new(false);
        full.target("t", "≤ 1", "2".into(), false);
        full.target("u", "≤ 1", "0".into(), true);
        assert_eq!(full.misses(), 1);
        assert!(full.markdown().contains("| t | ≤ 1 | 2 | MISS |"));
        full.targets[1].disturbed = Some("40%".into());
        assert!(
            full.markdown()
                .contains("| PASS (disturbed: others used 40% of a CPU) |")
        );
    }
}
