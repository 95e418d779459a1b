//! The tree's own shape: within each crate, no top-level module uses
//! another that uses it back (directly or around a longer loop). A cycle
//! means two modules can only be understood together; this test names it
//! when someone adds one. Unit tests (`tests.rs`, `mod tests { … }`) and
//! comments (doc links) do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 7] = [
    "proto",
    "hooks",
    "transport",
    "program",
    "server",
    "client",
    "testkit",
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names after each `crate::` in the code of `text` (not its
/// comments, not its unit tests).
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let name: String = line[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Which top-level module of `src` uses which other.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_owned();
        let unit_tests = rel.file_name().is_some_and(|n| n == "tests.rs");
        if ["lib", "main", "bin"].contains(&top.as_str()) || unit_tests {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(uses(&text).into_iter().filter(|m| *m != top));
    }
    // Only edges to modules (not to items defined in lib.rs).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A loop of modules, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in CRATES {
        let graph = graph(&root.join(krate).join("src"));
        assert!(!graph.is_empty(), "{krate}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: modules use each other: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut graph = BTreeMap::new();
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    graph.insert("a".to_owned(), set(&["b"]));
    graph.insert("b".to_owned(), set(&["c"]));
    graph.insert("c".to_owned(), set(&["a"]));
    graph.insert("d".to_owned(), set(&["a"]));
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.insert("c".to_owned(), set(&[]));
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        uses("use crate::x::Y;\n// crate::doc\nfn f() { crate::z(); }\n#[cfg(test)]\nmod tests { use crate::w; }"),
        set(&["x", "z"])
    );
}
