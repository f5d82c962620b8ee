//! Issue 14: the crates' modules import each other without circles, so each file can be read (and
//! changed) knowing only what it names below it. A `crate::name` in code (not in comments or unit
//! tests) is an edge; any circle fails this test and names its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → the modules of the same crate it names.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let word = regex::Regex::new(r"crate::(\w+)|crate::\{([^}]*)\}").unwrap();
    let mut graph = BTreeMap::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
        if !modules.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut deps = BTreeSet::new();
        for c in word.captures_iter(&code) {
            let named: Vec<&str> = match (c.get(1), c.get(2)) {
                (Some(one), _) => vec![one.as_str()],
                (_, Some(group)) => group
                    .as_str()
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or_default())
                    .collect(),
                _ => vec![],
            };
            for m in named {
                if m != name && modules.contains(m) {
                    deps.insert(m.to_owned());
                }
            }
        }
        graph.insert(name, deps);
    }
    graph
}

/// A circle through the graph, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_each_other_without_circles() {
    let root = khttpd_tests::repo_root();
    for krate in ["frontend/src", "backend-bridge/src", "mime/src"] {
        let dir = root.join(krate);
        if !dir.is_dir() {
            continue;
        }
        let graph = edges(&dir);
        assert!(
            graph.len() > 1 || krate == "mime/src",
            "{krate}: no modules read"
        );
        if let Some(found) = circle(&graph) {
            panic!(
                "{krate}: modules import each other in a circle: {}",
                found.join(" → ")
            );
        }
    }
}

#[test]
fn a_circle_is_found() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circle(&g).unwrap(), ["a", "b", "c", "a"]);
}
