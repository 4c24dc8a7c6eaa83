//! A reader for the block-style YAML subset PEtab v1 problem files use (PEtab v1 specification,
//! "Problem definition file"): nested mappings and sequences by indentation, `- item` entries,
//! plain or quoted scalars, flow lists `[a, b]`, `#` comments. Anchors, multi-line scalars and
//! flow mappings are refused with the line number.

use std::collections::BTreeMap;

/// A parsed YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// A scalar, unquoted.
    Str(String),
    /// A sequence.
    List(Vec<Yaml>),
    /// A mapping (keys sorted).
    Map(BTreeMap<String, Yaml>),
}

impl Yaml {
    /// The value at `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(m) => m.get(key),
            _ => None,
        }
    }
    /// The scalar text, if a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Scalars of a list (a lone scalar counts as a one-element list).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Yaml::Str(s) => vec![s.clone()],
            Yaml::List(v) => v
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Yaml::Map(_) => Vec::new(),
        }
    }
}

struct Line {
    no: usize,
    indent: usize,
    text: String,
}

fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(o)) if q == o => quote = None,
            ('#', None) if i == 0 || s[..i].ends_with(' ') || s[..i].ends_with('\t') => {
                return &s[..i]
            }
            _ => {}
        }
    }
    s
}

fn scalar(s: &str, no: usize) -> Result<Yaml, String> {
    let s = s.trim();
    if s.starts_with('[') {
        let inner = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .ok_or_else(|| format!("line {no}: unterminated flow list"))?;
        let items = inner
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| scalar(x, no))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Yaml::List(items));
    }
    if s.starts_with('{')
        || s.starts_with('&')
        || s.starts_with('*')
        || s.starts_with('|')
        || s.starts_with('>')
    {
        return Err(format!("line {no}: unsupported YAML construct '{s}'"));
    }
    let unq = if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        &s[1..s.len() - 1]
    } else {
        s
    };
    Ok(Yaml::Str(unq.to_string()))
}

/// Split `key: value` (value may be empty); `None` when the line is not a mapping entry.
fn key_value(s: &str) -> Option<(String, &str)> {
    let i = s
        .find(": ")
        .or_else(|| s.strip_suffix(':').map(|x| x.len()))?;
    let k = s[..i].trim();
    let k = k.trim_matches(|c| c == '"' || c == '\'');
    Some((k.to_string(), s[i + 1..].trim()))
}

fn block(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Yaml, String> {
    let first = &lines[*pos];
    if first.text.starts_with("- ") || first.text == "-" {
        let mut items = Vec::new();
        while *pos < lines.len() && lines[*pos].indent == indent {
            let l = &lines[*pos];
            let Some(rest) = l.text.strip_prefix('-') else {
                break;
            };
            let rest = rest.trim_start();
            let inner_indent = indent + (l.text.len() - rest.len());
            if rest.is_empty() {
                *pos += 1;
                if *pos < lines.len() && lines[*pos].indent > indent {
                    let ind = lines[*pos].indent;
                    items.push(block(lines, pos, ind)?);
                } else {
                    items.push(Yaml::Str(String::new()));
                }
            } else if key_value(rest).is_some() {
                // "- key: value" opens a mapping whose entries continue at inner_indent.
                let mut sub = vec![Line {
                    no: l.no,
                    indent: inner_indent,
                    text: rest.to_string(),
                }];
                let mut j = *pos + 1;
                while j < lines.len() && lines[j].indent > indent {
                    sub.push(Line {
                        no: lines[j].no,
                        indent: lines[j].indent,
                        text: lines[j].text.clone(),
                    });
                    j += 1;
                }
                let mut p = 0;
                items.push(block(&sub, &mut p, inner_indent)?);
                *pos = j;
            } else {
                items.push(scalar(rest, l.no)?);
                *pos += 1;
            }
        }
        return Ok(Yaml::List(items));
    }
    let mut map = BTreeMap::new();
    while *pos < lines.len() && lines[*pos].indent == indent {
        let l = &lines[*pos];
        let (k, v) =
            key_value(&l.text).ok_or_else(|| format!("line {}: expected 'key: value'", l.no))?;
        *pos += 1;
        let value = if !v.is_empty() {
            scalar(v, l.no)?
        } else if *pos < lines.len()
            && (lines[*pos].indent > indent
                || (lines[*pos].indent == indent && lines[*pos].text.starts_with('-')))
        {
            let ind = lines[*pos].indent;
            block(lines, pos, ind)?
        } else {
            Yaml::Str(String::new())
        };
        map.insert(k, value);
    }
    if *pos < lines.len() && lines[*pos].indent > indent {
        return Err(format!("line {}: unexpected indentation", lines[*pos].no));
    }
    Ok(Yaml::Map(map))
}

/// Parse YAML text of the PEtab subset. Errors: a message naming the 1-based line.
pub fn parse(text: &str) -> Result<Yaml, String> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.contains('\t') && raw.trim_start().len() != raw.trim_start_matches('\t').len() {
            return Err(format!("line {}: tab indentation", i + 1));
        }
        let t = strip_comment(raw).trim_end();
        if t.trim().is_empty() || t.trim() == "---" {
            continue;
        }
        let indent = t.len() - t.trim_start().len();
        lines.push(Line {
            no: i + 1,
            indent,
            text: t.trim_start().to_string(),
        });
    }
    if lines.is_empty() {
        return Ok(Yaml::Map(BTreeMap::new()));
    }
    let mut pos = 0;
    let ind = lines[0].indent;
    let v = block(&lines, &mut pos, ind)?;
    if pos < lines.len() {
        return Err(format!("line {}: unexpected content", lines[pos].no));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_list_styles() {
        let a = "format_version: 1\nparameter_file: p.tsv\nproblems:\n- condition_files:\n  - c.tsv\n  sbml_files: [m.xml]\n";
        let b = "format_version: 1 # v1\nparameter_file: 'p.tsv'\nproblems:\n  - condition_files:\n      - c.tsv\n    sbml_files:\n      - m.xml\n";
        for t in [a, b] {
            let y = parse(t).unwrap();
            assert_eq!(y.get("parameter_file").unwrap().as_str(), Some("p.tsv"));
            let Yaml::List(p) = y.get("problems").unwrap() else {
                panic!()
            };
            assert_eq!(
                p[0].get("condition_files").unwrap().strings(),
                vec!["c.tsv"]
            );
            assert_eq!(p[0].get("sbml_files").unwrap().strings(), vec!["m.xml"]);
        }
        assert!(parse("a: 1\n   b: 2\n").unwrap_err().contains("line 2"));
    }
}
