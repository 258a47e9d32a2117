//! The crate's modules depend on each other without cycles: each module's `use` items and
//! inline `crate::`/`super::`/`self::` paths (test code left out) name the module that
//! defines what they use, and those edges must form a DAG. A module declaring a child
//! (`mod x;`) is not an edge; re-exporting one (`pub use x::Y`) is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`graphql::types::node`, `` for the crate root) → its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
                continue;
            }
            match name.as_str() {
                "main" if prefix.is_empty() => continue,
                "mod" | "lib" => {}
                _ => module.push(name),
            }
            out.insert(module.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The source without comments and without its `#[cfg(test)]` part (test modules come
/// last in a file).
fn code(source: &str) -> String {
    let source = source.split("#[cfg(test)]").next().unwrap_or_default();
    source
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// The module a path used in `module` names, if it is one of this crate's.
fn resolve(
    mods: &BTreeMap<String, String>,
    reexports: &BTreeMap<&str, &str>,
    module: &str,
    path: &str,
) -> Option<String> {
    let path = path.split(" as ").next().unwrap_or(path);
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    match segs.first().copied() {
        Some("crate") => {
            base.clear();
            segs.remove(0);
        }
        Some("super" | "self") => {
            while let Some(first @ ("super" | "self")) = segs.first().copied() {
                if first == "super" {
                    base.pop();
                }
                segs.remove(0);
            }
        }
        Some(first) => {
            let mut child = base.clone();
            child.push(first);
            if !mods.contains_key(&child.join("::")) {
                return None;
            }
        }
        None => return None,
    }
    if base.is_empty()
        && let Some(target) = segs.first().and_then(|s| reexports.get(s))
    {
        return Some((*target).to_owned());
    }
    let full: Vec<&str> = base.into_iter().chain(segs).collect();
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

/// Every module's dependencies.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    // What the crate root re-exports, by the module that defines it.
    let reexports: BTreeMap<&str, &str> = [
        ("AppConfig", "config"),
        ("AppSchema", "graphql::schema"),
        ("build_schema", "graphql::schema"),
        ("router", "http"),
        ("AppState", "state"),
    ]
    .into();
    let mut edges = BTreeMap::new();
    for (module, source) in &mods {
        let code = code(source);
        let mut paths = Vec::new();
        for (at, _) in code.match_indices("use ") {
            if at > 0 && is_path_char(code.as_bytes()[at - 1]) {
                continue;
            }
            let tail = &code[at + 4..];
            paths.extend(expand(&tail[..tail.find(';').unwrap_or(tail.len())]));
        }
        for start in ["crate::", "super::", "self::"] {
            for (at, _) in code.match_indices(start) {
                if at > 0 && is_path_char(code.as_bytes()[at - 1]) {
                    continue;
                }
                let len = code[at..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(code.len() - at);
                paths.push(code[at..at + len].to_owned());
            }
        }
        let deps: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| resolve(&mods, &reexports, module, p))
            .filter(|m| m != module)
            .collect();
        edges.insert(module.clone(), deps);
    }
    edges
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// A cycle through `from`, if its dependencies lead back to a module on `stack`.
fn find_cycle(
    edges: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = stack.iter().position(|m| m == from) {
        let mut cycle = stack[at..].to_vec();
        cycle.push(from.to_owned());
        return Some(cycle);
    }
    if done.contains(from) {
        return None;
    }
    stack.push(from.to_owned());
    for dep in edges.get(from).into_iter().flatten() {
        if let Some(cycle) = find_cycle(edges, dep, stack, done) {
            return Some(cycle);
        }
    }
    stack.pop();
    done.insert(from.to_owned());
    None
}

#[test]
fn modules_depend_on_each_other_without_cycles() {
    let edges = edges();
    assert!(edges["http"].contains("rest"), "the parser finds edges");
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(cycle) = find_cycle(&edges, module, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn use_trees_expand_to_paths() {
    assert_eq!(
        expand("super::{a::B, c::{d, e::F}}"),
        ["super::a::B", "super::c::d", "super::c::e::F"]
    );
}
