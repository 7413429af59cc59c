//! The results the hack/bench scripts write (hack/bench/results.sh): JSON
//! Lines, one measured case or one note a line, grouped here by benchmark.

use std::fmt;

use anyhow::{bail, ensure, Context, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Which way a figure is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

impl Better {
    pub fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// One subject's figure for a case. A figure read once has all three equal.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// One measured case: the same measurement of each subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub samples: u64,
    /// Berth's component, which the ratios are taken of.
    pub reference: String,
    /// In the order the script gave them.
    pub subjects: Vec<(String, Stats)>,
}

impl Case {
    pub fn stats(&self, subject: &str) -> Option<&Stats> {
        self.subjects
            .iter()
            .find(|(name, _)| name == subject)
            .map(|(_, s)| s)
    }

    /// The subjects other than the reference, in order.
    pub fn peers(&self) -> impl Iterator<Item = &(String, Stats)> {
        self.subjects
            .iter()
            .filter(move |(name, _)| *name != self.reference)
    }

    /// The reference's median over `peer`'s, if both are there and the
    /// peer's is positive.
    pub fn ratio(&self, peer: &str) -> Option<f64> {
        let r = self.stats(&self.reference)?.median;
        let p = self.stats(peer)?.median;
        (p > 0.0).then(|| r / p).filter(|q| q.is_finite())
    }
}

/// A benchmark (one hack/bench script): its cases and notes in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bench {
    pub name: String,
    pub cases: Vec<Case>,
    pub notes: Vec<String>,
}

impl Bench {
    /// Every subject of any case, in order of first appearance.
    pub fn subjects(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for case in &self.cases {
            for (name, _) in &case.subjects {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Every (reference, peer) pair of any case, in order of first appearance.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for case in &self.cases {
            for (peer, _) in case.peers() {
                let pair = (case.reference.as_str(), peer.as_str());
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out
    }
}

/// One line as written: a case, or a note when `note` is set.
#[derive(Debug, Deserialize)]
struct Line {
    bench: String,
    note: Option<String>,
    case: Option<String>,
    unit: Option<String>,
    better: Option<Better>,
    samples: Option<u64>,
    reference: Option<String>,
    subjects: Option<Subjects>,
}

/// A JSON object of subject -> stats, kept in the file's order.
#[derive(Debug)]
struct Subjects(Vec<(String, Stats)>);

impl<'de> Deserialize<'de> for Subjects {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Subjects;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of subject name -> {median, min, max}")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Subjects, A::Error> {
                let mut out: Vec<(String, Stats)> = Vec::new();
                while let Some((name, stats)) = map.next_entry::<String, Stats>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!("subject {name:?} twice")));
                    }
                    out.push((name, stats));
                }
                Ok(Subjects(out))
            }
        }
        d.deserialize_map(Ordered)
    }
}

/// Parses the whole JSON Lines text (blank lines skipped) into benchmarks,
/// in order of first appearance.
pub fn parse(text: &str) -> Result<Vec<Bench>> {
    let mut benches: Vec<Bench> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).with_context(|| format!("line {lineno}: not a result"))?;
        ensure!(!line.bench.is_empty(), "line {lineno}: empty bench name");
        let pos = match benches.iter().position(|b| b.name == line.bench) {
            Some(pos) => pos,
            None => {
                benches.push(Bench {
                    name: line.bench.clone(),
                    ..Bench::default()
                });
                benches.len() - 1
            }
        };
        let bench = &mut benches[pos];
        match line.note {
            Some(note) => bench.notes.push(note),
            None => {
                let case = into_case(line).with_context(|| format!("line {lineno}"))?;
                ensure!(
                    bench.cases.iter().all(|c| c.name != case.name),
                    "line {lineno}: case {:?} of {} given twice",
                    case.name,
                    bench.name
                );
                bench.cases.push(case);
            }
        }
    }
    Ok(benches)
}

fn into_case(line: Line) -> Result<Case> {
    let name = line.case.context("neither `case` nor `note`")?;
    let Some(Subjects(subjects)) = line.subjects else {
        bail!("case {name:?}: no `subjects`");
    };
    let case = Case {
        unit: line
            .unit
            .with_context(|| format!("case {name:?}: no `unit`"))?,
        better: line
            .better
            .with_context(|| format!("case {name:?}: no `better`"))?,
        samples: line
            .samples
            .with_context(|| format!("case {name:?}: no `samples`"))?,
        reference: line
            .reference
            .with_context(|| format!("case {name:?}: no `reference`"))?,
        subjects,
        name,
    };
    ensure!(
        case.stats(&case.reference).is_some(),
        "case {:?}: the reference {:?} is not among its subjects",
        case.name,
        case.reference
    );
    for (subject, s) in &case.subjects {
        ensure!(
            [s.median, s.min, s.max].iter().all(|v| v.is_finite()),
            "case {:?}: {subject}'s figures are not all finite",
            case.name
        );
        ensure!(
            s.min <= s.median && s.median <= s.max,
            "case {:?}: {subject}'s figures are not min <= median <= max ({} {} {})",
            case.name,
            s.min,
            s.median,
            s.max
        );
    }
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"bench":"run","case":"ctr run --rm true","unit":"ms","better":"lower","samples":30,"reference":"berthd","subjects":{"berthd":{"median":46.0,"min":40.1,"max":60.2},"containerd":{"median":92.0,"min":88.0,"max":130.9}}}"#;

    #[test]
    fn parses_cases_and_notes_in_order() -> Result<()> {
        let text = format!(
            "{}\n\n{}\n{}\n",
            r#"{"bench":"runtime","case":"run true","unit":"ms","better":"lower","samples":5,"reference":"berth","subjects":{"berth":{"median":10,"min":9,"max":12},"runc":{"median":20,"min":19,"max":30},"crun":{"median":8,"min":7,"max":9}}}"#,
            RUN,
            r#"{"bench":"runtime","note":"crun in a private mount namespace"}"#
        );
        let benches = parse(&text)?;
        assert_eq!(benches.len(), 2);
        assert_eq!(benches[0].name, "runtime");
        // the file's order, not the alphabet's
        assert_eq!(benches[0].subjects(), ["berth", "runc", "crun"]);
        assert_eq!(benches[0].pairs(), [("berth", "runc"), ("berth", "crun")]);
        assert_eq!(benches[0].notes, ["crun in a private mount namespace"]);
        assert_eq!(benches[1].cases[0].samples, 30);
        Ok(())
    }

    #[test]
    fn ratio_is_reference_over_peer() -> Result<()> {
        let benches = parse(RUN)?;
        let case = &benches[0].cases[0];
        assert_eq!(case.ratio("containerd"), Some(0.5));
        assert_eq!(case.ratio("nosuch"), None);
        Ok(())
    }

    #[test]
    fn ratio_to_a_zero_median_is_none() -> Result<()> {
        let line = RUN.replace(r#""median":92.0,"min":88.0"#, r#""median":0,"min":0"#);
        let benches = parse(&line)?;
        assert_eq!(benches[0].cases[0].ratio("containerd"), None);
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!("{RUN}\n{{\"bench\":\"run\",\"case\":\"x\"}}\n");
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("no `subjects`"), "{err}");

        let err = format!("{:#}", parse("{not json").unwrap_err());
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn rejects_bad_cases() {
        let missing_ref = RUN.replace(r#""reference":"berthd""#, r#""reference":"berth""#);
        assert!(parse(&missing_ref).is_err());
        let unordered = RUN.replace(r#""min":40.1"#, r#""min":50.1"#);
        assert!(parse(&unordered).is_err());
        let twice = RUN.replace(r#""containerd":"#, r#""berthd":"#);
        assert!(parse(&twice).is_err());
        let better = RUN.replace(r#""lower""#, r#""sideways""#);
        assert!(parse(&better).is_err());
        assert!(parse(&format!("{RUN}\n{RUN}")).is_err());
    }
}
