//! Hierarchical model composition (SBML Level 3 `comp` package, version 1), flattened into one
//! core model before compilation:
//! * every submodel instance contributes its (recursively flattened) model definition with ids
//!   prefixed `SUBMODEL__` (the test suite's naming), local `modelDefinition`s and
//!   `externalModelDefinition`s (other files, resolved relative to the main file) alike;
//! * `deletion`s remove the referenced element; `replacedElement` removes the submodel's element
//!   and points every reference at the replacement (`conversionFactor`: replacement = replaced ×
//!   factor); `replacedBy` removes the parent's element and gives the submodel's element its id;
//!   references go through `idRef`, `metaIdRef`, `portRef` and nested `sBaseRef`s;
//! * `timeConversionFactor` / `extentConversionFactor` of a submodel rescale its time, rate
//!   rules, kinetic laws and delays.
//!
//! The result is serialised as core SBML text and compiled like any other document.

use crate::SbmlError;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Namespace prefix of the comp package URIs.
const COMP_NS: &str = "http://www.sbml.org/sbml/level3/version1/comp/version1";
const MATHML: &str = "http://www.w3.org/1998/Math/MathML";
const MAX_DEPTH: usize = 24;

/// Owned XML element.
#[derive(Debug, Clone)]
struct X {
    uid: usize,
    ns: String,
    name: String,
    attrs: Vec<(Option<String>, String, String)>,
    kids: Vec<K>,
}

#[derive(Debug, Clone)]
enum K {
    E(X),
    T(String),
}

impl X {
    /// Attribute by local name, any namespace (comp attributes are usually prefixed).
    fn a(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| v.trim())
    }
    fn set(&mut self, name: &str, v: String) {
        for a in self.attrs.iter_mut() {
            if a.0.is_none() && a.1 == name {
                a.2 = v;
                return;
            }
        }
        self.attrs.push((None, name.to_string(), v));
    }
    fn elems(&self) -> impl Iterator<Item = &X> {
        self.kids.iter().filter_map(|k| match k {
            K::E(x) => Some(x),
            K::T(_) => None,
        })
    }
    fn child(&self, name: &str) -> Option<&X> {
        self.elems().find(|c| c.name == name)
    }
    fn is_comp(&self) -> bool {
        self.ns == COMP_NS || self.ns.contains("/comp/")
    }
}

struct Uids(usize);

fn own(n: roxmltree::Node, uids: &mut Uids, in_math: bool) -> X {
    uids.0 += 1;
    let ns = n.tag_name().namespace().unwrap_or("").to_string();
    let math = in_math || ns == MATHML;
    let mut kids = Vec::new();
    for c in n.children() {
        if c.is_element() {
            kids.push(K::E(own(c, uids, math)));
        } else if c.is_text() && math {
            kids.push(K::T(c.text().unwrap_or("").to_string()));
        }
    }
    X {
        uid: uids.0,
        ns,
        name: n.tag_name().name().to_string(),
        attrs: n
            .attributes()
            .map(|a| {
                (
                    a.namespace().map(String::from),
                    a.name().to_string(),
                    a.value().to_string(),
                )
            })
            .collect(),
        kids,
    }
}

/// Whether a document uses the comp package (any comp namespace declaration).
pub(crate) fn uses_comp(text: &str) -> bool {
    text.contains("/comp/version")
}

struct Doc {
    /// Model definitions by id (the main `<model>` included).
    models: HashMap<String, X>,
    /// External model definitions: id → (source, modelRef).
    externals: HashMap<String, (String, String)>,
    main: Option<X>,
    dir: Option<PathBuf>,
    level: String,
    version: String,
    core_ns: String,
}

fn parse_doc(text: &str, dir: Option<&Path>, uids: &mut Uids) -> Result<Doc, SbmlError> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let d = roxmltree::Document::parse_with_options(text, opt)
        .map_err(|e| SbmlError::Xml(e.to_string()))?;
    let root = own(d.root_element(), uids, false);
    if root.name != "sbml" {
        return Err(SbmlError::Invalid("root element is not <sbml>".into()));
    }
    let mut doc = Doc {
        models: HashMap::new(),
        externals: HashMap::new(),
        main: None,
        dir: dir.map(Path::to_path_buf),
        level: root.a("level").unwrap_or("3").to_string(),
        version: root.a("version").unwrap_or("1").to_string(),
        core_ns: root.ns.clone(),
    };
    for c in root.elems() {
        match (c.is_comp(), c.name.as_str()) {
            (false, "model") => {
                if let Some(id) = c.a("id") {
                    doc.models.insert(id.to_string(), c.clone());
                }
                doc.main = Some(c.clone());
            }
            (true, "listOfModelDefinitions") => {
                for m in c.elems().filter(|m| m.name == "modelDefinition") {
                    let id = m.a("id").unwrap_or_default().to_string();
                    doc.models.insert(id, m.clone());
                }
            }
            (true, "listOfExternalModelDefinitions") => {
                for m in c.elems().filter(|m| m.name == "externalModelDefinition") {
                    let id = m.a("id").unwrap_or_default().to_string();
                    let src = m.a("source").unwrap_or_default().to_string();
                    let mref = m.a("modelRef").unwrap_or_default().to_string();
                    doc.externals.insert(id, (src, mref));
                }
            }
            _ => {}
        }
    }
    Ok(doc)
}

/// Look-up tables of one instantiated model: its own elements by id and metaid (uid and final
/// id), its ports, and its submodels' tables.
#[derive(Default)]
struct Tables {
    by_id: HashMap<String, (usize, String)>,
    by_meta: HashMap<String, (usize, String)>,
    ports: HashMap<String, X>,
    subs: HashMap<String, Tables>,
}

/// A component element (child of a core `listOf…`) of the flattened model.
struct Item {
    list: String,
    node: X,
}

/// (extent conversion factor, time conversion factor) of one submodel level.
type ScalePair = (Option<String>, Option<String>);

struct Flat {
    items: Vec<Item>,
    deleted: HashSet<usize>,
    /// Final id → final id it now stands for.
    redirect: HashMap<String, String>,
    /// Replaced final id → (replacement final id, conversion factor final id).
    conv: HashMap<String, (String, String)>,
    /// Reaction final id → (extent, time) conversion factors of the enclosing submodels: the
    /// flux in the flattened model is the submodel's kinetic law × extent / time factors, so a
    /// reference to the reaction in the submodel's own math reads flux × time / extent.
    rxn_scale: HashMap<String, Vec<ScalePair>>,
    /// Kinetic law uid → its local parameters replaced by model-wide symbols (id → final id).
    local_redirect: HashMap<usize, HashMap<String, String>>,
    uids: Uids,
    docs: Vec<Doc>,
}

/// Attributes holding references to SIds.
const REF_ATTRS: [&str; 6] = [
    "id",
    "compartment",
    "species",
    "variable",
    "symbol",
    "conversionFactor",
];

/// Element kinds (core) whose `id` is a model-wide SId.
fn defines_sid(x: &X) -> bool {
    matches!(
        x.name.as_str(),
        "functionDefinition"
            | "compartment"
            | "species"
            | "parameter"
            | "reaction"
            | "speciesReference"
            | "modifierSpeciesReference"
            | "event"
    )
}

/// Prefix SIds (via `map`), metaids, references and MathML identifiers; `shadow` holds local
/// names (kinetic-law parameters, lambda arguments) that are not renamed; `in_law` is set
/// inside a kinetic law (whose parameters keep their ids).
fn rename(
    x: &mut X,
    map: &HashMap<String, String>,
    prefix: &str,
    shadow: &HashSet<String>,
    in_law: bool,
) {
    let mut local = shadow.clone();
    let law = in_law || x.name == "kineticLaw";
    if x.name == "kineticLaw" {
        for l in x.elems() {
            if l.name == "listOfParameters" || l.name == "listOfLocalParameters" {
                for p in l.elems() {
                    if let Some(id) = p.a("id") {
                        local.insert(id.to_string());
                    }
                }
            }
        }
    }
    if x.name == "lambda" {
        for b in x.elems().filter(|b| b.name == "bvar") {
            for ci in b.elems() {
                local.insert(text(ci));
            }
        }
    }
    let is_local_param = law && (x.name == "localParameter" || x.name == "parameter");
    for (ns, n, v) in x.attrs.iter_mut() {
        if ns.is_some() {
            continue;
        }
        if n == "metaid" {
            *v = format!("{prefix}{}", v.trim());
        } else if REF_ATTRS.contains(&n.as_str()) && !(n == "id" && is_local_param) {
            if let Some(r) = map.get(v.trim()) {
                *v = r.clone();
            }
        }
    }
    if x.ns == MATHML && x.name == "ci" {
        let t = text(x);
        if !local.contains(&t) {
            if let Some(r) = map.get(&t) {
                x.kids = vec![K::T(r.clone())];
            }
        }
        return;
    }
    for k in x.kids.iter_mut() {
        if let K::E(c) = k {
            rename(c, map, prefix, &local, law);
        }
    }
}

/// Fresh uids for a copy of a model definition (each instance is distinct).
fn reuid(x: &mut X, uids: &mut Uids) {
    uids.0 += 1;
    x.uid = uids.0;
    for k in x.kids.iter_mut() {
        if let K::E(c) = k {
            reuid(c, uids);
        }
    }
}

fn text(x: &X) -> String {
    let mut s = String::new();
    for k in &x.kids {
        match k {
            K::T(t) => s.push_str(t),
            K::E(e) => s.push_str(&text(e)),
        }
    }
    s.trim().to_string()
}

fn math_el(name: &str, kids: Vec<K>, uids: &mut Uids) -> X {
    uids.0 += 1;
    X {
        uid: uids.0,
        ns: MATHML.to_string(),
        name: name.to_string(),
        attrs: Vec::new(),
        kids,
    }
}

fn ci(id: &str, uids: &mut Uids) -> X {
    math_el("ci", vec![K::T(id.to_string())], uids)
}

/// `<apply><op/> a b</apply>`.
fn apply2(op: &str, a: X, b: X, uids: &mut Uids) -> X {
    let o = math_el(op, Vec::new(), uids);
    math_el("apply", vec![K::E(o), K::E(a), K::E(b)], uids)
}

/// Wrap the content of the `<math>` child of `x` as `op(content, ci(f))`.
fn wrap_math(x: &mut X, op: &str, f: &str, uids: &mut Uids) {
    for k in x.kids.iter_mut() {
        if let K::E(m) = k {
            if m.name == "math" {
                let pos = m.kids.iter().position(|k| matches!(k, K::E(_)));
                if let Some(p) = pos {
                    if let K::E(inner) = m.kids[p].clone() {
                        m.kids[p] = K::E(apply2(op, inner, ci(f, uids), uids));
                    }
                }
            }
        }
    }
}

/// Rescale a submodel's time (`tcf`: parent time = tcf × submodel time) inside MathML:
/// `time` → `time / tcf`, the delay of `delay()` → `delay × tcf`.
fn scale_time_math(x: &mut X, tcf: &str, uids: &mut Uids) {
    for k in x.kids.iter_mut() {
        let K::E(c) = k else { continue };
        if c.ns == MATHML
            && c.name == "csymbol"
            && c.a("definitionURL").is_some_and(|u| u.ends_with("/time"))
        {
            let t = c.clone();
            *c = apply2("divide", t, ci(tcf, uids), uids);
            continue;
        }
        if c.ns == MATHML && c.name == "apply" {
            let is_delay = c.elems().next().is_some_and(|h| {
                h.name == "csymbol" && h.a("definitionURL").is_some_and(|u| u.ends_with("/delay"))
            });
            scale_time_math(c, tcf, uids);
            if is_delay {
                let idx: Vec<usize> = c
                    .kids
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| matches!(k, K::E(_)))
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&i) = idx.get(2) {
                    if let K::E(d) = c.kids[i].clone() {
                        c.kids[i] = K::E(apply2("times", d, ci(tcf, uids), uids));
                    }
                }
            }
            continue;
        }
        scale_time_math(c, tcf, uids);
    }
}

impl Flat {
    fn load_external(&mut self, from: usize, src: &str) -> Result<usize, SbmlError> {
        let dir = self.docs[from].dir.clone().ok_or_else(|| {
            SbmlError::Unsupported(format!(
                "comp externalModelDefinition source '{src}' (text input has no directory)"
            ))
        })?;
        let path = dir.join(src);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            SbmlError::Io(format!(
                "comp externalModelDefinition source '{}': {e}",
                path.display()
            ))
        })?;
        let d = parse_doc(&text, path.parent(), &mut self.uids)?;
        self.docs.push(d);
        Ok(self.docs.len() - 1)
    }

    /// The model definition `mref` as seen from document `d`: (document, model element).
    fn find_model(&mut self, d: usize, mref: &str, depth: usize) -> Result<(usize, X), SbmlError> {
        if depth > MAX_DEPTH {
            return Err(SbmlError::Invalid(format!(
                "comp: model reference '{mref}' nests too deeply (cycle?)"
            )));
        }
        if let Some(m) = self.docs[d].models.get(mref) {
            return Ok((d, m.clone()));
        }
        if let Some((src, r)) = self.docs[d].externals.get(mref).cloned() {
            let e = self.load_external(d, &src)?;
            if r.is_empty() {
                // No modelRef: the external document's main model.
                return match &self.docs[e].main {
                    Some(m) => Ok((e, m.clone())),
                    None => Err(SbmlError::Invalid(format!(
                        "comp externalModelDefinition '{mref}': '{src}' has no <model>"
                    ))),
                };
            }
            return self.find_model(e, &r, depth + 1);
        }
        Err(SbmlError::Invalid(format!(
            "comp submodel: unknown modelRef '{mref}'"
        )))
    }

    /// Resolve an SBaseRef-like element (`idRef`/`metaIdRef`/`portRef` plus nested `sBaseRef`)
    /// against `t`: (uid, final id).
    fn resolve(t: &Tables, r: &X, what: &str, depth: usize) -> Result<(usize, String), SbmlError> {
        if depth > MAX_DEPTH {
            return Err(SbmlError::Invalid(format!("comp: {what} nests too deeply")));
        }
        let nested = r.elems().find(|c| c.name == "sBaseRef");
        if let Some(p) = r.a("portRef") {
            let port = t.ports.get(p).ok_or_else(|| {
                SbmlError::Invalid(format!("comp: {what} names unknown port '{p}'"))
            })?;
            return Self::resolve(t, port, what, depth + 1);
        }
        if let Some(id) = r.a("idRef") {
            if let Some(n) = nested {
                let sub = t.subs.get(id).ok_or_else(|| {
                    SbmlError::Invalid(format!("comp: {what} names unknown submodel '{id}'"))
                })?;
                return Self::resolve(sub, n, what, depth + 1);
            }
            return t.by_id.get(id).cloned().ok_or_else(|| {
                SbmlError::Invalid(format!("comp: {what} names unknown element '{id}'"))
            });
        }
        if let Some(m) = r.a("metaIdRef") {
            return t.by_meta.get(m).cloned().ok_or_else(|| {
                SbmlError::Invalid(format!("comp: {what} names unknown metaid '{m}'"))
            });
        }
        if r.a("unitRef").is_some() {
            // Units do not affect simulation here.
            return Ok((0, String::new()));
        }
        Err(SbmlError::Invalid(format!(
            "comp: {what} without idRef, metaIdRef or portRef"
        )))
    }

    /// Instantiate model `m` of document `d` with id prefix `prefix`; returns its tables.
    fn instantiate(
        &mut self,
        d: usize,
        m: &X,
        prefix: &str,
        depth: usize,
    ) -> Result<Tables, SbmlError> {
        if depth > MAX_DEPTH {
            return Err(SbmlError::Invalid(format!(
                "comp: submodels nest too deeply at '{prefix}' (cycle?)"
            )));
        }
        let mut m = m.clone();
        reuid(&mut m, &mut self.uids);
        let m = &m;
        let mut t = Tables::default();
        // Ids defined here.
        let mut map: HashMap<String, String> = HashMap::new();
        fn collect(x: &X, prefix: &str, map: &mut HashMap<String, String>) {
            if x.is_comp() || x.ns == MATHML {
                return;
            }
            if defines_sid(x) {
                if let Some(id) = x.a("id") {
                    map.insert(id.to_string(), format!("{prefix}{id}"));
                }
            }
            if x.name == "kineticLaw" {
                return;
            }
            for c in x.elems() {
                collect(c, prefix, map);
            }
        }
        for c in m.elems() {
            if !c.is_comp() && c.name.starts_with("listOf") {
                collect(c, prefix, &mut map);
            }
        }
        let model_conv = m.a("conversionFactor").map(|c| {
            map.get(c)
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{c}"))
        });
        // Own component elements.
        for l in m.elems() {
            if l.is_comp() || !l.name.starts_with("listOf") {
                continue;
            }
            if l.ns != self.docs[0].core_ns && !l.ns.starts_with("http://www.sbml.org/sbml/level") {
                return Err(SbmlError::Unsupported(format!(
                    "element <{}> of package '{}' in comp model '{}'",
                    l.name,
                    l.ns,
                    m.a("id").unwrap_or_default()
                )));
            }
            if l.name == "listOfUnitDefinitions" {
                continue;
            }
            for c in l.elems() {
                if c.is_comp() || c.name == "annotation" || c.name == "notes" {
                    continue;
                }
                let mut node = c.clone();
                rename(&mut node, &map, prefix, &HashSet::new(), false);
                if node.name == "species" && node.a("conversionFactor").is_none() {
                    if let Some(cf) = &model_conv {
                        node.set("conversionFactor", cf.clone());
                    }
                }
                self.items.push(Item {
                    list: l.name.clone(),
                    node,
                });
            }
        }
        // Tables over the original (unrenamed) ids, pointing at uids.
        fn index(x: &X, prefix: &str, t: &mut Tables) {
            if x.is_comp() || x.ns == MATHML {
                return;
            }
            if let Some(id) = x.a("id") {
                if x.attrs.iter().any(|(ns, n, _)| ns.is_none() && n == "id") {
                    t.by_id
                        .entry(id.to_string())
                        .or_insert((x.uid, format!("{prefix}{id}")));
                }
            }
            if let Some(mid) = x.a("metaid") {
                let fid = x
                    .a("id")
                    .map(|i| format!("{prefix}{i}"))
                    .unwrap_or_default();
                t.by_meta.insert(mid.to_string(), (x.uid, fid));
            }
            if x.name == "kineticLaw" {
                // Local parameters: reachable by metaid only.
                // A local parameter's "final id" is scoped to its law: "\0LAW_UID\0ID".
                fn metas(x: &X, law: usize, t: &mut Tables) {
                    for c in x.elems() {
                        if let Some(mid) = c.a("metaid") {
                            let fid = match (c.name.as_str(), c.a("id")) {
                                ("localParameter" | "parameter", Some(id)) => {
                                    format!("\0{law}\0{id}")
                                }
                                _ => String::new(),
                            };
                            t.by_meta.insert(mid.to_string(), (c.uid, fid));
                        }
                        metas(c, law, t);
                    }
                }
                metas(x, x.uid, t);
                return;
            }
            for c in x.elems() {
                index(c, prefix, t);
            }
        }
        for l in m.elems() {
            if !l.is_comp() && l.name.starts_with("listOf") {
                for c in l.elems() {
                    index(c, prefix, &mut t);
                }
            }
        }
        // Renamed items keep the uids of the original nodes (clone), so the tables are valid.
        if let Some(ports) = m.child("listOfPorts") {
            for p in ports.elems().filter(|p| p.name == "port") {
                if let Some(id) = p.a("id") {
                    t.ports.insert(id.to_string(), p.clone());
                }
            }
        }
        // Submodels.
        let mut subs_raw: Vec<X> = Vec::new();
        if let Some(ls) = m
            .elems()
            .find(|c| c.is_comp() && c.name == "listOfSubmodels")
        {
            subs_raw = ls
                .elems()
                .filter(|s| s.name == "submodel")
                .cloned()
                .collect();
        }
        for s in &subs_raw {
            let sid = s.a("id").unwrap_or_default().to_string();
            let mref = s.a("modelRef").unwrap_or_default().to_string();
            let (sd, sm) = self.find_model(d, &mref, depth)?;
            let sprefix = format!("{prefix}{sid}__");
            let start = self.items.len();
            let st = self.instantiate(sd, &sm, &sprefix, depth + 1)?;
            // Deletions.
            if let Some(ld) = s.child("listOfDeletions") {
                for del in ld.elems().filter(|x| x.name == "deletion") {
                    let (uid, fid) =
                        Self::resolve(&st, del, &format!("deletion in submodel '{sid}'"), 0)?;
                    self.deleted.insert(uid);
                    // A deleted local parameter uncovers the model-wide symbol of that name.
                    if let Some((law, id)) = fid.strip_prefix('\0').and_then(|r| r.split_once('\0'))
                    {
                        if let (Ok(law), Some((_, g))) = (law.parse::<usize>(), st.by_id.get(id)) {
                            self.local_redirect
                                .entry(law)
                                .or_default()
                                .insert(id.to_string(), g.clone());
                        }
                    }
                }
            }
            // Time and extent conversion of everything the submodel brought in.
            let fid = |a: &str| {
                map.get(a)
                    .cloned()
                    .unwrap_or_else(|| format!("{prefix}{a}"))
            };
            let tcf = s.a("timeConversionFactor").map(fid);
            let xcf = s.a("extentConversionFactor").map(fid);
            for it in self.items[start..].iter_mut() {
                if let Some(tcf) = &tcf {
                    scale_time_math(&mut it.node, tcf, &mut self.uids);
                    match it.node.name.as_str() {
                        "rateRule" => wrap_math(&mut it.node, "divide", tcf, &mut self.uids),
                        "event" => {
                            for k in it.node.kids.iter_mut() {
                                if let K::E(c) = k {
                                    if c.name == "delay" {
                                        wrap_math(c, "times", tcf, &mut self.uids);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if it.node.name == "reaction" && (xcf.is_some() || tcf.is_some()) {
                    if let Some(id) = it.node.a("id") {
                        self.rxn_scale
                            .entry(id.to_string())
                            .or_default()
                            .push((xcf.clone(), tcf.clone()));
                    }
                }
                if it.node.name == "reaction" {
                    for k in it.node.kids.iter_mut() {
                        if let K::E(c) = k {
                            if c.name == "kineticLaw" {
                                if let Some(x) = &xcf {
                                    wrap_math(c, "times", x, &mut self.uids);
                                }
                                if let Some(tc) = &tcf {
                                    wrap_math(c, "divide", tc, &mut self.uids);
                                }
                            }
                        }
                    }
                }
            }
            t.subs.insert(sid, st);
        }
        // Replacements declared on this model's own elements.
        let orig: HashMap<usize, &X> = {
            let mut h = HashMap::new();
            fn walk<'x>(x: &'x X, h: &mut HashMap<usize, &'x X>) {
                h.insert(x.uid, x);
                for c in x.elems() {
                    walk(c, h);
                }
            }
            for l in m.elems() {
                if !l.is_comp() && l.name.starts_with("listOf") {
                    walk(l, &mut h);
                }
            }
            h
        };
        let mut todo: Vec<(usize, String)> = Vec::new();
        for (uid, x) in &orig {
            let fid = x
                .a("id")
                .map(|i| format!("{prefix}{i}"))
                .unwrap_or_default();
            if x.elems().any(|c| c.is_comp()) {
                todo.push((*uid, fid));
            }
        }
        todo.sort();
        for (uid, fid) in todo {
            let x = orig[&uid];
            for c in x.elems().filter(|c| c.is_comp()) {
                let reps: Vec<&X> = match c.name.as_str() {
                    "listOfReplacedElements" => {
                        c.elems().filter(|r| r.name == "replacedElement").collect()
                    }
                    "replacedBy" => vec![c],
                    _ => Vec::new(),
                };
                for r in reps {
                    let sref = r.a("submodelRef").unwrap_or_default();
                    let st = t.subs.get(sref).ok_or_else(|| {
                        SbmlError::Invalid(format!(
                            "comp: '{}' refers to unknown submodel '{sref}'",
                            x.a("id").or(x.a("metaid")).unwrap_or(&x.name)
                        ))
                    })?;
                    if r.a("deletion").is_some() {
                        continue;
                    }
                    let what = format!("{} of '{}'", r.name, x.a("id").unwrap_or(&x.name));
                    let (tuid, tfid) = Self::resolve(st, r, &what, 0)?;
                    if r.name == "replacedBy" {
                        self.deleted.insert(uid);
                        if !tfid.is_empty() && !fid.is_empty() {
                            self.redirect.insert(tfid, fid.clone());
                        }
                    } else if let Some(rest) = tfid.strip_prefix('\0') {
                        // A kinetic law's local parameter replaced by a model-wide symbol.
                        self.deleted.insert(tuid);
                        if let Some((law, id)) = rest.split_once('\0') {
                            if let Ok(law) = law.parse::<usize>() {
                                self.local_redirect
                                    .entry(law)
                                    .or_default()
                                    .insert(id.to_string(), fid.clone());
                            }
                        }
                    } else {
                        self.deleted.insert(tuid);
                        if !tfid.is_empty() && !fid.is_empty() {
                            if let Some(cf) = r.a("conversionFactor") {
                                let cff = map
                                    .get(cf)
                                    .cloned()
                                    .unwrap_or_else(|| format!("{prefix}{cf}"));
                                self.conv.insert(tfid.clone(), (fid.clone(), cff));
                            }
                            self.redirect.insert(tfid, fid.clone());
                        }
                    }
                }
            }
        }
        Ok(t)
    }

    fn final_id(&self, id: &str) -> String {
        let mut cur = id.to_string();
        for _ in 0..MAX_DEPTH {
            match self.redirect.get(&cur) {
                Some(n) if *n != cur => cur = n.clone(),
                _ => break,
            }
        }
        cur
    }

    fn write(
        &self,
        x: &X,
        out: &mut String,
        uids: &mut Uids,
        local: Option<&HashMap<String, String>>,
    ) {
        let local = if x.name == "kineticLaw" {
            self.local_redirect.get(&x.uid).or(local)
        } else {
            local
        };
        if self.deleted.contains(&x.uid) || x.is_comp() {
            return;
        }
        if x.name == "annotation" || x.name == "notes" {
            return;
        }
        // Conversion factor on a replaced rule/assignment target.
        let node;
        let x = match x
            .a("variable")
            .or(x.a("symbol"))
            .and_then(|v| self.conv.get(v))
        {
            Some((_, cf)) => {
                let mut n = x.clone();
                wrap_math(&mut n, "times", cf, uids);
                node = n;
                &node
            }
            None => x,
        };
        if x.ns == MATHML && x.name == "ci" {
            let t = text(x);
            if let Some(r) = local.and_then(|l| l.get(&t)) {
                let _ = write!(out, "<ci>{}</ci>", esc(&self.final_id(r)));
                return;
            }
            if let Some((rep, cf)) = self.conv.get(&t) {
                let e = apply2(
                    "divide",
                    ci(&self.final_id(rep), uids),
                    ci(&self.final_id(cf), uids),
                    uids,
                );
                self.write(&e, out, uids, local);
                return;
            }
            if let Some(sc) = self
                .rxn_scale
                .get(&t)
                .filter(|_| !self.redirect.contains_key(&t))
            {
                // flux × Π time factors / Π extent factors, in the submodel's units.
                let _ = write!(out, "<apply><times/><ci>{}</ci>", esc(&self.final_id(&t)));
                for (_, tcf) in sc {
                    if let Some(f) = tcf {
                        let _ = write!(out, "<ci>{}</ci>", esc(&self.final_id(f)));
                    }
                }
                for (xcf, _) in sc {
                    if let Some(f) = xcf {
                        let _ = write!(
                            out,
                            "<apply><divide/><cn>1</cn><ci>{}</ci></apply>",
                            esc(&self.final_id(f))
                        );
                    }
                }
                out.push_str("</apply>");
                return;
            }
            let _ = write!(out, "<ci>{}</ci>", esc(&self.final_id(&t)));
            return;
        }
        let _ = write!(out, "<{}", x.name);
        if x.name == "math" {
            let _ = write!(out, " xmlns=\"{MATHML}\"");
        }
        for (ns, n, v) in &x.attrs {
            if ns.is_some() || n.starts_with("xmlns") {
                continue;
            }
            let v = if REF_ATTRS.contains(&n.as_str()) {
                self.final_id(v.trim())
            } else {
                v.clone()
            };
            let _ = write!(out, " {n}=\"{}\"", esc(&v));
        }
        out.push('>');
        for k in &x.kids {
            match k {
                K::E(c) => self.write(c, out, uids, local),
                K::T(t) => out.push_str(&esc(t)),
            }
        }
        let _ = write!(out, "</{}>", x.name);
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Flatten a comp document into core SBML text. `dir` is where external model files are looked
/// up (the main file's directory).
pub(crate) fn flatten(text: &str, dir: Option<&Path>) -> Result<String, SbmlError> {
    let mut uids = Uids(0);
    let doc = parse_doc(text, dir, &mut uids)?;
    let main = doc
        .main
        .clone()
        .ok_or_else(|| SbmlError::Invalid("no <model>".into()))?;
    let (level, version, core_ns) = (doc.level.clone(), doc.version.clone(), doc.core_ns.clone());
    let mut f = Flat {
        items: Vec::new(),
        deleted: HashSet::new(),
        redirect: HashMap::new(),
        conv: HashMap::new(),
        rxn_scale: HashMap::new(),
        local_redirect: HashMap::new(),
        uids,
        docs: vec![doc],
    };
    f.instantiate(0, &main, "", 0)?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<sbml xmlns=\"{core_ns}\" level=\"{level}\" version=\"{version}\"><model"
    );
    for (ns, n, v) in &main.attrs {
        if ns.is_none() && n != "conversionFactor" {
            let _ = write!(out, " {n}=\"{}\"", esc(v));
        }
    }
    out.push('>');
    let mut uids = Uids(f.uids.0 + 1_000_000);
    for list in [
        "listOfFunctionDefinitions",
        "listOfCompartments",
        "listOfSpecies",
        "listOfParameters",
        "listOfInitialAssignments",
        "listOfRules",
        "listOfConstraints",
        "listOfReactions",
        "listOfEvents",
    ] {
        let its: Vec<&Item> = f
            .items
            .iter()
            .filter(|i| i.list == list && !f.deleted.contains(&i.node.uid))
            .collect();
        if its.is_empty() {
            continue;
        }
        let _ = write!(out, "<{list}>");
        for it in its {
            f.write(&it.node, &mut out, &mut uids, None);
        }
        let _ = write!(out, "</{list}>");
    }
    for it in &f.items {
        if !it.list.starts_with("listOf")
            || [
                "listOfFunctionDefinitions",
                "listOfCompartments",
                "listOfSpecies",
                "listOfParameters",
                "listOfInitialAssignments",
                "listOfRules",
                "listOfConstraints",
                "listOfReactions",
                "listOfEvents",
                "listOfCompartmentTypes",
                "listOfSpeciesTypes",
            ]
            .contains(&it.list.as_str())
        {
            continue;
        }
        return Err(SbmlError::Unsupported(format!(
            "model element <{}> in a comp model",
            it.list
        )));
    }
    out.push_str("</model></sbml>\n");
    Ok(out)
}
