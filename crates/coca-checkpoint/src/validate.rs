//! Strict comparison of a checkpoint's tensors with what a model expects, and a
//! readable report of every difference.
//!
//! A wrong config typically produces hundreds of differences at once (every block of
//! a tower), so the report groups names that differ only in their layer numbers:
//! `visual.transformer.resblocks.{0-11}.ln_1.weight [768] (12 tensors)`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A tensor present on both sides with different shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The tensor's name.
    pub name: String,
    /// The shape the model expects.
    pub expected: Vec<usize>,
    /// The shape in the checkpoint.
    pub found: Vec<usize>,
}

/// Every difference between expected and actual tensors; each list sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationReport {
    /// Expected but absent, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Present but not expected, with the checkpoint's shape.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Present on both sides with different shapes.
    pub wrong_shape: Vec<ShapeMismatch>,
}

impl ValidationReport {
    /// Compare `expected` (name, shape) pairs with the `actual` ones. Duplicate
    /// expected names count once; the last shape given wins.
    pub fn compare<'a>(
        expected: &[(String, Vec<usize>)],
        actual: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Self {
        let mut want: HashMap<&str, &[usize]> = expected
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let mut report = Self::default();
        for (name, found) in actual {
            match want.remove(name) {
                None => report.unexpected.push((name.to_string(), found.to_vec())),
                Some(shape) if shape != found => report.wrong_shape.push(ShapeMismatch {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    found: found.to_vec(),
                }),
                Some(_) => {}
            }
        }
        report.missing = want
            .into_iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect();
        report.missing.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        report.unexpected.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        report
            .wrong_shape
            .sort_by(|a, b| natural_cmp(&a.name, &b.name));
        report
    }

    /// Whether there is no difference at all.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }

    /// A prefix that explains many missing/unexpected pairs, e.g. checkpoint names
    /// `model.visual.proj` where the model wants `visual.proj`.
    fn prefix_hint(&self) -> Option<String> {
        let unexpected: BTreeSet<&str> = self.unexpected.iter().map(|(n, _)| n.as_str()).collect();
        let missing: BTreeSet<&str> = self.missing.iter().map(|(n, _)| n.as_str()).collect();
        let hint = |longer: &BTreeSet<&str>, shorter: &BTreeSet<&str>| -> Option<(String, usize)> {
            let first = shorter.iter().next()?;
            let suffix = format!(".{first}");
            let candidate = longer.iter().find(|l| l.ends_with(&suffix))?;
            let prefix = &candidate[..candidate.len() - first.len()];
            let hits = shorter
                .iter()
                .filter(|s| longer.contains(format!("{prefix}{s}").as_str()))
                .count();
            Some((prefix.to_string(), hits))
        };
        if let Some((prefix, hits)) = hint(&unexpected, &missing) {
            return Some(format!(
                "{hits} missing name(s) are present with an extra prefix '{prefix}' in the checkpoint"
            ));
        }
        hint(&missing, &unexpected).map(|(prefix, hits)| {
            format!("{hits} unexpected name(s) are expected with an extra prefix '{prefix}'")
        })
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing, {} unexpected, {} with the wrong shape",
            self.missing.len(),
            self.unexpected.len(),
            self.wrong_shape.len()
        )?;
        let shaped = |list: &[(String, Vec<usize>)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(n, s)| (n.clone(), shape_str(s)))
                .collect()
        };
        let mismatched: Vec<(String, String)> = self
            .wrong_shape
            .iter()
            .map(|m| {
                let detail = format!(
                    "expected {}, found {}",
                    shape_str(&m.expected),
                    shape_str(&m.found)
                );
                (m.name.clone(), detail)
            })
            .collect();
        let sections = [
            ("missing from the checkpoint", shaped(&self.missing)),
            ("unexpected in the checkpoint", shaped(&self.unexpected)),
            ("wrong shape", mismatched),
        ];
        for (title, items) in sections {
            if items.is_empty() {
                continue;
            }
            write!(f, "\n  {title} ({}):", items.len())?;
            for line in group_lines(&items) {
                write!(f, "\n    {line}")?;
            }
        }
        if let Some(hint) = self.prefix_hint() {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// A name split at its purely numeric path segments (layer indices).
struct Split {
    /// The name with each numeric segment replaced by `{}`.
    template: String,
    numbers: Vec<u64>,
}

fn split_numbers(name: &str) -> Split {
    let mut numbers = Vec::new();
    let segments: Vec<&str> = name
        .split('.')
        .map(|seg| match parse_index(seg) {
            Some(n) => {
                numbers.push(n);
                "{}"
            }
            None => seg,
        })
        .collect();
    Split {
        template: segments.join("."),
        numbers,
    }
}

/// A layer index: digits without a leading zero, so rendering it back is exact.
fn parse_index(seg: &str) -> Option<u64> {
    let canonical = seg == "0" || (!seg.starts_with('0') && !seg.is_empty());
    if canonical && seg.bytes().all(|b| b.is_ascii_digit()) {
        seg.parse().ok()
    } else {
        None
    }
}

/// A name and the numbers found in it.
type Member<'a> = (&'a str, Vec<u64>);

/// Render `(name, detail)` items, merging names that differ only in layer numbers
/// when together they form a full grid (so the compact form lists exactly them).
fn group_lines(items: &[(String, String)]) -> Vec<String> {
    let mut groups: BTreeMap<(String, &str), Vec<Member<'_>>> = BTreeMap::new();
    for (name, detail) in items {
        let split = split_numbers(name);
        groups
            .entry((split.template, detail.as_str()))
            .or_default()
            .push((name.as_str(), split.numbers));
    }
    let mut lines: Vec<(String, String)> = Vec::new(); // (sort key, text)
    for ((template, detail), members) in groups {
        let first = members
            .iter()
            .map(|(n, _)| *n)
            .min_by(|a, b| natural_cmp(a, b))
            .unwrap_or_default()
            .to_string();
        match grid(&members) {
            Some(axes) if members.len() > 1 => {
                let mut rendered = String::new();
                let mut axes = axes.iter();
                for (i, part) in template.split("{}").enumerate() {
                    if i > 0 {
                        rendered.push_str(&axes.next().map(render_axis).unwrap_or_default());
                    }
                    rendered.push_str(part);
                }
                lines.push((
                    first,
                    format!("{rendered} {detail} ({} tensors)", members.len()),
                ));
            }
            _ => {
                for (name, _) in &members {
                    lines.push((name.to_string(), format!("{name} {detail}")));
                }
            }
        }
    }
    lines.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    lines.into_iter().map(|(_, text)| text).collect()
}

/// The distinct values at each numeric position, if the members are exactly their
/// cartesian product.
fn grid(members: &[Member<'_>]) -> Option<Vec<BTreeSet<u64>>> {
    let positions = members.first()?.1.len();
    let mut axes = vec![BTreeSet::new(); positions];
    for (_, numbers) in members {
        for (axis, n) in axes.iter_mut().zip(numbers) {
            axis.insert(*n);
        }
    }
    let product = axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.len()))?;
    (product == members.len()).then_some(axes)
}

/// `{0-11}`, `{0,2,5-7}`, or a bare number for a single value.
fn render_axis(values: &BTreeSet<u64>) -> String {
    if values.len() == 1 {
        return values.iter().next().map(u64::to_string).unwrap_or_default();
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &v in values {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == v => *end = v,
            _ => runs.push((v, v)),
        }
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Order names segment by segment, numeric segments by value (`blocks.2` < `blocks.10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<(u8, u64, String)> {
        s.split('.')
            .map(|seg| match parse_index(seg) {
                Some(n) => (0, n, String::new()),
                None => (1, 0, seg.to_string()),
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        v.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect()
    }

    #[test]
    fn classifies_every_difference() {
        let expected = owned(&[("a", &[2]), ("b", &[3, 4]), ("c", &[])]);
        let actual: Vec<(&str, &[usize])> = vec![("a", &[2]), ("b", &[4, 3]), ("d", &[1])];
        let r = ValidationReport::compare(&expected, actual);
        assert_eq!(r.missing, owned(&[("c", &[])]));
        assert_eq!(r.unexpected, owned(&[("d", &[1])]));
        assert_eq!(
            r.wrong_shape,
            [ShapeMismatch {
                name: "b".into(),
                expected: vec![3, 4],
                found: vec![4, 3]
            }]
        );
        let text = r.to_string();
        assert!(
            text.starts_with("1 missing, 1 unexpected, 1 with the wrong shape"),
            "{text}"
        );
        assert!(text.contains("\n    c []"), "{text}");
        assert!(
            text.contains("\n    b expected [3, 4], found [4, 3]"),
            "{text}"
        );
    }

    #[test]
    fn layer_numbers_are_grouped_into_ranges() {
        let mut items = Vec::new();
        for i in (0..12).filter(|i| *i != 9) {
            items.push((format!("v.blocks.{i}.ln.weight"), "[8]".to_string()));
        }
        items.push(("v.blocks.3.ln.weight.extra".to_string(), "[8]".to_string()));
        items.push(("v.proj".to_string(), "[8, 4]".to_string()));
        let lines = group_lines(&items);
        assert_eq!(
            lines,
            [
                "v.blocks.{0-8,10-11}.ln.weight [8] (11 tensors)",
                "v.blocks.3.ln.weight.extra [8]",
                "v.proj [8, 4]",
            ]
        );
    }

    #[test]
    fn groups_split_by_detail_and_non_grids_are_listed() {
        let items = vec![
            ("l.0.w".to_string(), "[2]".to_string()),
            ("l.1.w".to_string(), "[3]".to_string()),
            // Two numeric positions that do not form a full grid.
            ("m.0.x.0".to_string(), "[1]".to_string()),
            ("m.1.x.1".to_string(), "[1]".to_string()),
            // ... and a full 2x2 grid.
            ("n.0.x.0".to_string(), "[1]".to_string()),
            ("n.0.x.1".to_string(), "[1]".to_string()),
            ("n.1.x.0".to_string(), "[1]".to_string()),
            ("n.1.x.1".to_string(), "[1]".to_string()),
        ];
        assert_eq!(
            group_lines(&items),
            [
                "l.0.w [2]",
                "l.1.w [3]",
                "m.0.x.0 [1]",
                "m.1.x.1 [1]",
                "n.{0-1}.x.{0-1} [1] (4 tensors)",
            ]
        );
    }

    #[test]
    fn prefix_hint_spots_wrapped_names() {
        let expected = owned(&[("visual.proj", &[2]), ("logit_scale", &[])]);
        let actual: Vec<(&str, &[usize])> =
            vec![("model.visual.proj", &[2]), ("model.logit_scale", &[])];
        let text = ValidationReport::compare(&expected, actual).to_string();
        assert!(
            text.contains("hint: 2 missing name(s) are present with an extra prefix 'model.'"),
            "{text}"
        );
    }

    #[test]
    fn natural_order_and_indices() {
        let mut v = vec!["b.10", "b.2", "a", "b.02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a", "b.2", "b.10", "b.02"]);
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("07"), None);
        assert_eq!(parse_index("x1"), None);
    }
}
