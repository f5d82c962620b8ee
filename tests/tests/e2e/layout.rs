//! Issue 14: the crates' modules import each other without circles, so each file can be read (and
//! changed) knowing only what it names below it. A `crate::name` in code (not in comments or unit
//! tests) is an edge; any circle fails this test and names its files. Modules live in folders
//! named after kHTTPd's stages (`conn/head_guard.rs` is `conn::head_guard`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module file under `src` (its path below `src`), but the crate roots and binaries.
fn module_files(src: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                module_files(src, &path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
            continue;
        }
        out.push((parts.join("::"), path));
    }
}

/// Module path (`conn::fast_path`) → the modules of the same crate it names. A path names the
/// longest module it starts with; `super::` and `self::` are resolved from the naming module. A folder's
/// `mod.rs` declaring its children is not an edge, a `use` in it is.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    module_files(src, src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let path_re = regex::Regex::new(r"\b(crate|super|self)((?:::\w+)*)(?:::\{([^}]*)\})?").unwrap();
    let mut graph = BTreeMap::new();
    for (name, file) in &files {
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
        // `super` of `a::b` (a/b.rs) is `a`; of `a` (a/mod.rs or a.rs), the crate root.
        let mut parent: Vec<&str> = name.split("::").collect();
        parent.pop();
        let mut deps = BTreeSet::new();
        for c in path_re.captures_iter(&code) {
            // A bare word (`pub(super)`, `&self`) names no module.
            if c[2].is_empty() && c.get(3).is_none() {
                continue;
            }
            let base: Vec<String> = match &c[1] {
                "super" => parent.iter().map(|s| s.to_string()).collect(),
                "self" => name.split("::").map(str::to_owned).collect(),
                _ => vec![],
            };
            let mut stem = base;
            stem.extend(
                c[2].split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            let mut named = vec![stem.clone()];
            if let Some(group) = c.get(3) {
                named = group
                    .as_str()
                    .split(',')
                    .map(|item| {
                        let mut p = stem.clone();
                        p.extend(
                            item.trim()
                                .split("::")
                                .map(|s| s.trim().to_owned())
                                .filter(|s| !s.is_empty() && s != "self" && !s.contains(' ')),
                        );
                        p
                    })
                    .collect();
            }
            for parts in named {
                let target = (1..=parts.len())
                    .rev()
                    .map(|n| parts[..n].join("::"))
                    .find(|m| modules.contains(m));
                if let Some(m) = target.filter(|m| m != name) {
                    deps.insert(m);
                }
            }
        }
        graph.insert(name.clone(), deps);
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
        // The reader resolves nested paths (else it would find no circle because it found nothing).
        if krate == "frontend/src" {
            let decision = &graph["conn::fast_path::decision"];
            assert!(
                decision.contains("cache::keys") && decision.contains("conn::fast_path::send"),
                "{decision:?}"
            );
            let fast_path = &graph["conn::fast_path"];
            assert!(
                fast_path.contains("conn::fast_path::decision") && fast_path.contains("config"),
                "{fast_path:?}"
            );
        }
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
