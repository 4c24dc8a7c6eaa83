//! Repairs of SBML documents found in PEtab problems that libSBML reads but `medtwin-sbml`
//! refuses: a MathML `<apply>` whose only child is another `<apply>` (a bracketing that
//! libSBML reads as the inner expression; Beer_MolBioSystems2014's kinetic laws).

/// Byte range in the document text.
type Span = std::ops::Range<usize>;

/// Byte ranges `(outer, inner)` of `<apply>` elements whose only element child is an
/// `<apply>`, outermost first, non-overlapping.
fn grouping_applies(text: &str) -> Result<Vec<(Span, Span)>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let mut out: Vec<(Span, Span)> = Vec::new();
    for n in doc.descendants().filter(|n| n.has_tag_name("apply")) {
        let kids: Vec<_> = n.children().filter(|c| c.is_element()).collect();
        if kids.len() == 1 && kids[0].has_tag_name("apply") {
            let r = n.range();
            if out
                .iter()
                .all(|(o, _)| r.end <= o.start || r.start >= o.end)
            {
                out.push((r, kids[0].range()));
            }
        }
    }
    Ok(out)
}

/// Replace every `<apply><apply>…</apply></apply>` by its inner `<apply>` (repeatedly, for
/// nested ones). Text that is not well-formed XML is returned unchanged (the SBML reader
/// reports it).
pub fn unwrap_grouping_applies(text: &str) -> String {
    let mut s = text.to_string();
    loop {
        let Ok(mut found) = grouping_applies(&s) else {
            return s;
        };
        if found.is_empty() {
            return s;
        }
        found.sort_by_key(|(o, _)| std::cmp::Reverse(o.start));
        for (o, i) in found {
            let inner = s[i].to_string();
            s.replace_range(o, &inner);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unwraps_nested_groupings() {
        let t = "<math><apply><times/><ci>a</ci><apply><apply><apply><plus/><ci>b</ci><cn>1</cn></apply></apply></apply></apply></math>";
        assert_eq!(
            super::unwrap_grouping_applies(t),
            "<math><apply><times/><ci>a</ci><apply><plus/><ci>b</ci><cn>1</cn></apply></apply></math>"
        );
    }
}
