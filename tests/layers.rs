//! The crate's structure: dependencies between the modules of `src/` point one way (commands ->
//! plans and bench -> model and ops -> kernels -> gpu), with no import cycle at any level, and
//! no source file grows past 700 lines.
//!
//! A module's dependencies are read from its source: every `crate::a::b` and `super::x` path
//! outside `#[cfg(test)]` blocks. A module and its own submodules are one unit to the modules
//! beside them; inside it, its submodules must not form a cycle either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first: a module may use only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["paths", "rng", "args"],
    &["gpu", "checkpoint", "pth", "data", "plot"],
    &["kernels"],
    &["ops"],
    &["model", "reference"],
    &["plan"],
    &["infer"],
    &["bench", "train"],
    &["adapters", "reproduce"],
];

/// Every `.rs` file under `src/` but `main.rs` and `lib.rs`, as its module path (`ops/conv/select`).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let rel = rel.to_str().unwrap().replace('\\', "/");
            let module = rel.strip_suffix("/mod").map(str::to_string).unwrap_or(rel);
            (module != "main" && module != "lib").then_some((module, path))
        })
        .collect()
}

/// The source without its `#[cfg(test)] mod tests { ... }` block (the rest of the file) and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The identifier paths that follow `prefix` in `code`: `crate::ops::conv::select::X` gives
/// `["ops", "conv", "select", "X"]`; a braced list (`super::{a, b::c}`, `crate::ops::{conv, pool}`)
/// gives one path per item.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let head: Vec<String> = rest[..end].split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        match rest[end..].strip_prefix('{') {
            Some(list) => {
                let list = &list[..list.find('}').unwrap_or(list.len())];
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let item = item.split("::").map(|s| s.trim().to_string());
                    found.push(head.iter().cloned().chain(item).collect());
                }
            }
            None => found.push(head),
        }
    }
    found
}

/// The module a path names: its longest prefix that is a module.
fn resolve(modules: &BTreeMap<String, PathBuf>, parts: &[String]) -> Option<String> {
    (1..=parts.len()).rev().map(|n| parts[..n].join("/")).find(|m| modules.contains_key(m))
}

/// Edges between modules: (from, to), from a file's `crate::` and `super::` paths.
fn edges(modules: &BTreeMap<String, PathBuf>) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::new();
    for (module, path) in modules {
        let code = code(path);
        // `super` of a `mod.rs` module is its parent folder's module; of a file, its folder's.
        let is_dir = path.file_name().unwrap() == "mod.rs";
        let mut parent: Vec<String> = module.split('/').map(String::from).collect();
        parent.pop();
        if !is_dir && parent.is_empty() {
            parent = vec![];
        }
        let mut targets = Vec::new();
        for parts in paths_after(&code, "crate::") {
            targets.extend(resolve(modules, &parts));
        }
        for parts in paths_after(&code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(parts).collect();
            targets.extend(resolve(modules, &full).or_else(|| (!parent.is_empty()).then(|| parent.join("/"))));
        }
        // A `mod.rs` also reaches its children by bare names (`select::ConvPath`).
        if is_dir {
            for child in modules.keys().filter(|m| m.rsplit_once('/').is_some_and(|(p, _)| p == module)) {
                let name = child.rsplit('/').next().unwrap();
                if code.contains(&format!("{name}::")) {
                    targets.push(child.clone());
                }
            }
        }
        for target in targets {
            if &target != module {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

/// For an edge between two modules neither of which contains the other: the two children of
/// their common ancestor that contain them (`ops/conv/tune -> ops/conv/select` stays as it is,
/// `plan/train -> ops/conv` becomes `plan -> ops`).
fn siblings(from: &str, to: &str) -> Option<(String, String)> {
    let (a, b): (Vec<&str>, Vec<&str>) = (from.split('/').collect(), to.split('/').collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == a.len() || common == b.len() {
        return None;
    }
    Some((a[..=common].join("/"), b[..=common].join("/")))
}

/// The cycles of a directed graph, each as its strongly connected set of nodes.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for node in graph.keys() {
        let from = reaches(node);
        if !from.contains(node) || found.iter().any(|c| c.contains(node)) {
            continue;
        }
        let cycle: Vec<String> =
            graph.keys().filter(|m| from.contains(*m) && reaches(m).contains(node)).cloned().collect();
        found.push(cycle);
    }
    found
}

#[test]
fn no_module_imports_in_a_cycle() {
    let modules = modules();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges(&modules) {
        if let Some((a, b)) = siblings(&from, &to) {
            graph.entry(a).or_default().insert(b);
        }
    }
    let found = cycles(&graph);
    let describe: Vec<String> = found
        .iter()
        .map(|cycle| {
            let uses: Vec<String> = cycle
                .iter()
                .map(|m| {
                    let deps: Vec<&str> = graph[m].iter().filter(|d| cycle.contains(d)).map(String::as_str).collect();
                    format!("{m} uses {}", deps.join(", "))
                })
                .collect();
            format!("[{}]: {}", cycle.join(" <-> "), uses.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles between modules of src/: {}", describe.join(" | "));
}

#[test]
fn dependencies_point_down_the_layers() {
    let modules = modules();
    let layer = |module: &str| {
        let top = module.split('/').next().unwrap();
        LAYERS.iter().position(|l| l.contains(&top)).unwrap_or_else(|| {
            panic!("src/{top} is in no layer: add it to LAYERS in tests/layers.rs, above what it uses")
        })
    };
    for module in modules.keys() {
        layer(module);
    }
    let upward: Vec<String> = edges(&modules)
        .into_iter()
        .filter_map(|(from, to)| siblings(&from, &to).filter(|(a, _)| !a.contains('/')))
        .filter(|(a, b)| layer(a) <= layer(b))
        .map(|(a, b)| format!("{a} uses {b}"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(upward.is_empty(), "modules that use a module of their own layer or above: {}", upward.join(", "));
}

#[test]
fn the_checks_see_the_imports() {
    // The reader finds the edges it must: a check that reads nothing passes everything.
    let edges = edges(&modules());
    for (from, to) in [("plan/train", "ops/conv"), ("ops/conv/tune", "ops/conv/select"), ("kernels/dispatch", "gpu")] {
        assert!(edges.contains(&(from.into(), to.into())), "{from} -> {to} not found in {edges:?}");
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
}

#[test]
fn no_source_file_passes_700_lines() {
    let long: Vec<String> = modules()
        .values()
        .map(|path| (std::fs::read_to_string(path).unwrap().lines().count(), path))
        .filter(|(lines, _)| *lines > 700)
        .map(|(lines, path)| format!("{} ({lines} lines)", path.display()))
        .collect();
    assert!(long.is_empty(), "split by concern: {}", long.join(", "));
}
