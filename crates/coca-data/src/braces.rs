//! Brace expansion of shard patterns, with the semantics of Python's `braceexpand` (which WebDataset uses):
//! `{a,b}` alternatives, `{0..9}` and `{a..e}` ranges with an optional step (`{0..10..2}`), descending ranges,
//! zero padding when a bound has a leading zero (`{07..10}` → `07 08 09 10`), nesting, and `\` escapes.
//! A brace group that is neither a range nor a list stays literal (`{1}` → `{1}`); unbalanced braces are an
//! error.

/// The most strings one pattern may expand to; far above any real shard count, low enough that a typo such
/// as `{0..9999999999}` fails quickly instead of exhausting memory.
const MAX_EXPANSIONS: usize = 1_000_000;

/// Expand `pattern` into the strings it stands for, in order.
///
/// ```
/// let shards = coca_data::expand_braces("data/{00..02}.tar").unwrap();
/// assert_eq!(shards, ["data/00.tar", "data/01.tar", "data/02.tar"]);
/// ```
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let expanded = expand(pattern)?;
    Ok(expanded.iter().map(|s| unescape(s)).collect())
}

/// Alternatives of a (sub)pattern, escapes still in place.
fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let bytes = pattern.as_bytes();
    let mut parts: Vec<Vec<String>> = Vec::new();
    let (mut start, mut pos, mut depth) = (0usize, 0usize, 0i64);
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => {
                pos += 2;
                continue;
            }
            b'{' => {
                if depth == 0 && pos > start {
                    parts.push(vec![pattern[start..pos].to_string()]);
                    start = pos;
                }
                depth += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    let inner = &pattern[start + 1..pos];
                    match group(inner)? {
                        Some(alternatives) => parts.push(alternatives),
                        // Neither a range nor a list: the braces are literal, their content still expands.
                        None => {
                            parts.push(vec!["{".into()]);
                            parts.push(expand(inner)?);
                            parts.push(vec!["}".into()]);
                        }
                    }
                    start = pos + 1;
                }
            }
            _ => {}
        }
        pos += 1;
    }
    if depth != 0 {
        return Err("unbalanced braces".into());
    }
    if start < bytes.len() {
        parts.push(vec![pattern[start..].to_string()]);
    }
    product(&parts)
}

/// Every concatenation of one alternative per part, the first part varying slowest.
fn product(parts: &[Vec<String>]) -> Result<Vec<String>, String> {
    let total = parts
        .iter()
        .try_fold(1usize, |n, p| n.checked_mul(p.len()))
        .filter(|&n| n <= MAX_EXPANSIONS)
        .ok_or_else(|| format!("expands to more than {MAX_EXPANSIONS} names"))?;
    let mut out = vec![String::new()];
    for part in parts {
        let mut next = Vec::with_capacity(out.len() * part.len());
        for prefix in &out {
            for alt in part {
                next.push(format!("{prefix}{alt}"));
            }
        }
        out = next;
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// The alternatives of a brace group's content, or `None` if it is not a range or a comma list.
fn group(inner: &str) -> Result<Option<Vec<String>>, String> {
    if let Some(range) = int_range(inner)? {
        return Ok(Some(range));
    }
    if let Some(range) = char_range(inner) {
        return Ok(Some(range));
    }
    list(inner)
}

/// `a,b,{c,d}`: the expansions of each top-level item, in order.
fn list(inner: &str) -> Result<Option<Vec<String>>, String> {
    let bytes = inner.as_bytes();
    let mut items = Vec::new();
    let (mut start, mut pos, mut depth) = (0usize, 0usize, 0i64);
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => {
                pos += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => depth -= 1,
            b',' if depth == 0 => {
                items.push(&inner[start..pos]);
                start = pos + 1;
            }
            _ => {}
        }
        pos += 1;
    }
    if depth != 0 {
        return Err("unbalanced braces".into());
    }
    if items.is_empty() {
        return Ok(None);
    }
    items.push(inner.get(start..).unwrap_or(""));
    let mut out = Vec::new();
    for item in items {
        out.extend(expand(item)?);
        if out.len() > MAX_EXPANSIONS {
            return Err(format!("expands to more than {MAX_EXPANSIONS} names"));
        }
    }
    Ok(Some(out))
}

/// Split `a..b` or `a..b..step` into its parts.
fn range_parts(inner: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut it = inner.split("..");
    let (left, right, step) = (it.next()?, it.next()?, it.next());
    if it.next().is_some() {
        return None;
    }
    // The step's sign is ignored: the direction comes from the bounds.
    let step = match step {
        Some(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits)
        }
        None => None,
    };
    Some((left, right, step))
}

fn is_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A step of 0 (or none) means 1, as in braceexpand.
fn parse_step(step: Option<&str>) -> Result<u64, String> {
    match step {
        None => Ok(1),
        Some(s) => {
            let n: u64 = s.parse().map_err(|_| format!("step `{s}` is too large"))?;
            Ok(n.max(1))
        }
    }
}

/// `{7..10}`, `{10..7..2}`, `{007..10}`: integers, zero-padded to the widest bound when a bound (other than
/// a lone `0`) starts with `0` or `-0`.
fn int_range(inner: &str) -> Result<Option<Vec<String>>, String> {
    let Some((left, right, step)) = range_parts(inner) else {
        return Ok(None);
    };
    if !is_int(left) || !is_int(right) {
        return Ok(None);
    }
    let bound = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("range bound `{s}` is too large"))
    };
    let (start, end) = (bound(left)?, bound(right)?);
    let step = parse_step(step)?;
    let padded = [left, right]
        .iter()
        .any(|s| *s != "0" && *s != "-0" && (s.starts_with('0') || s.starts_with("-0")));
    let width = if padded {
        left.len().max(right.len())
    } else {
        0
    };
    let count = (start.abs_diff(end) / step).saturating_add(1);
    if count > MAX_EXPANSIONS as u64 {
        return Err(format!(
            "range `{inner}` has more than {MAX_EXPANSIONS} values"
        ));
    }
    let values = (0..count).map(|i| {
        let offset = (i * step) as i64;
        if start <= end {
            start + offset
        } else {
            start - offset
        }
    });
    Ok(Some(values.map(|v| format!("{v:0width$}")).collect()))
}

/// Letters in braceexpand's order: `A`–`Z` then `a`–`z`.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `{a..e}`, `{e..a..2}`, `{X..c}`: letters, stepping through [`ALPHABET`].
fn char_range(inner: &str) -> Option<Vec<String>> {
    let (left, right, step) = range_parts(inner)?;
    let index = |s: &str| match s.as_bytes() {
        [c] => ALPHABET.iter().position(|a| a == c),
        _ => None,
    };
    let (start, end) = (index(left)?, index(right)?);
    let step = parse_step(step).ok()? as usize;
    let indices: Vec<usize> = if start <= end {
        (start..=end).step_by(step).collect()
    } else {
        (end..=start).rev().step_by(step).collect()
    };
    Some(
        indices
            .into_iter()
            .map(|i| char::from(ALPHABET[i]).to_string())
            .collect(),
    )
}

/// Drop escaping backslashes: `\x` → `x`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::expand_braces;

    fn check(pattern: &str, expected: &[&str]) {
        assert_eq!(expand_braces(pattern).unwrap(), expected, "{pattern}");
    }

    // Expected values are what Python's braceexpand 0.1.7 returns for each pattern (checked with it).
    #[test]
    fn lists_and_nesting() {
        check("{1,2}", &["1", "2"]);
        check("{1}", &["{1}"]);
        check("{1,2{}}", &["1", "2{}"]);
        check("}{", &["}{"]);
        check("a{b,c}d{e,f}", &["abde", "abdf", "acde", "acdf"]);
        check("a{b,c{d,e,}}", &["ab", "acd", "ace", "ac"]);
        check("a{b,{c,{d,e}}}", &["ab", "ac", "ad", "ae"]);
        check("{{a,b},{c,d}}", &["a", "b", "c", "d"]);
        check("{,}", &["", ""]);
        check("index.html{,.backup}", &["index.html", "index.html.backup"]);
        check("plain.tar", &["plain.tar"]);
    }

    #[test]
    fn integer_ranges_with_padding_and_steps() {
        check("{7..10}", &["7", "8", "9", "10"]);
        check("{10..7}", &["10", "9", "8", "7"]);
        check("{1..5..2}", &["1", "3", "5"]);
        check("{5..1..2}", &["5", "3", "1"]);
        check("{1..3..0}", &["1", "2", "3"]);
        check("{07..10}", &["07", "08", "09", "10"]);
        check("{7..010}", &["007", "008", "009", "010"]);
        check("{0..2}", &["0", "1", "2"]);
        check("{2..-1}", &["2", "1", "0", "-1"]);
        check("{-01..1}", &["-01", "000", "001"]);
        check("{1..1}", &["1"]);
        check(
            "shards/{00000..00002}.tar",
            &["shards/00000.tar", "shards/00001.tar", "shards/00002.tar"],
        );
        check(
            "s/{a,b}-{08..10}.tar",
            &[
                "s/a-08.tar",
                "s/a-09.tar",
                "s/a-10.tar",
                "s/b-08.tar",
                "s/b-09.tar",
                "s/b-10.tar",
            ],
        );
    }

    #[test]
    fn character_ranges() {
        check("{a..e}", &["a", "b", "c", "d", "e"]);
        check("{a..e..2}", &["a", "c", "e"]);
        check("{e..a}", &["e", "d", "c", "b", "a"]);
        check("{e..a..2}", &["e", "c", "a"]);
        check("{Z..a}", &["Z", "a"]);
        check("{a..Z}", &["a", "Z"]);
        check("{1..a}", &["{1..a}"]);
        check("{a..1}", &["{a..1}"]);
    }

    #[test]
    fn escapes() {
        check(r"\{1,2\}", &["{1,2}"]);
        check(r"{1\,2}", &["{1,2}"]);
        check(r"\}{1,2}", &["}1", "}2"]);
        check(r"{1,2}\{", &["1{", "2{"]);
        check(r"{\,1,2}", &[",1", "2"]);
        check(r"{1\,,2}", &["1,", "2"]);
        check(r"\\{1,2}", &[r"\1", r"\2"]);
        check(r"\{1..2\}", &["{1..2}"]);
        check(r"{1\{2,3}", &["1{2", "3"]);
    }

    #[test]
    fn unbalanced_and_huge_patterns_are_errors() {
        // An escaped `{` leaves its `}` unmatched, as in braceexpand.
        for bad in [
            "{1{2,3}", "{{1,2}", "{1,2}}", "{1,2}{", "{1,{2}", r"\{1,2}", r"\{1..2}",
        ] {
            let err = expand_braces(bad).unwrap_err();
            assert!(err.contains("unbalanced"), "{bad}: {err}");
        }
        let err = expand_braces("{0..99999999999}").unwrap_err();
        assert!(err.contains("more than"), "{err}");
        let err = expand_braces("{0..999}{0..999}{0..9}").unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
