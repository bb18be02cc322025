//! Tests of the crate's shape: the top-level modules depend only on the layers before them
//! ([`LAYERS`], the list `docs/ARCHITECTURE.md` shows), no import cycles between modules, and
//! the storage crates used only where the architecture puts them.
//!
//! It reads the crate's own sources (`src/**/*.rs`), takes every `crate::...` and `super::...`
//! path in the production code (every item under `#[cfg(test)]` is left out, wherever it is in
//! the file), resolves each to the module it names, and lifts every dependency `a::x -> b::y` to
//! the two sibling modules under their common parent (`a -> b` at the top level;
//! `run::finish -> run::stream` inside `run/`). A top-level dependency on a later layer fails
//! the test naming it, e.g. `table -> run`; a cycle among the siblings of any folder fails it
//! with the path it found, e.g. `run -> table -> run`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["run", "finish"]`) of a source file under `src/`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The library's layers, first to last: a top-level module depends only on modules of its
/// own layer or earlier ones (`docs/ARCHITECTURE.md` shows this list).
const LAYERS: &[&[&str]] = &[
    &[
        "contract",
        "error",
        "hours",
        "faults",
        "clock",
        "trace",
        "hashing",
        "memory",
        "provenance",
        "source_digest",
        "testing",
    ],
    &["storage"],
    &["config"],
    &["table"],
    &["input", "quarantine"],
    &["state"],
    &["query"],
    &["run"],
    &["rebuild"],
    &["verify"],
    &["view"],
    &["present"],
    &["ffi"],
    &["fixture"],
    &["architecture"],
];

/// The production part of a file, without comments: every item marked `#[cfg(test)]` (a test
/// module, a test-only function or method) is cut out, up to the end of its block or `;`.
fn production_code(text: &str) -> String {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let marker = "#[cfg(test)]";
    let mut kept = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(at) = rest.find(marker) {
        kept.push_str(&rest[..at]);
        rest = &rest[at + marker.len()..];
        // The item ends at a `;` before any block, or where its first block closes.
        let end = match (rest.find(';'), rest.find('{')) {
            (Some(semi), Some(open)) if semi < open => semi + 1,
            (_, Some(open)) => {
                let mut depth = 0usize;
                let mut end = rest.len();
                for (i, c) in rest[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(semi), None) => semi + 1,
            (None, None) => rest.len(),
        };
        rest = &rest[end..];
    }
    kept.push_str(rest);
    kept
}

/// Every path that starts with `crate::` or `super::` in `code`, with `use` groups expanded
/// (`crate::{a::b, c}` gives `crate::a::b` and `crate::c`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        let root = ["crate::", "super::"]
            .into_iter()
            .find(|r| starts_word && bytes[i..].starts_with(r.as_bytes()));
        match root {
            Some(r) => {
                let mut prefix = vec![r.trim_end_matches(':').to_owned()];
                let used = use_tree(&code[i + r.len()..], &mut prefix, &mut found);
                i += r.len() + used.max(1);
            }
            None => i += 1,
        }
    }
    found
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses a use tree (or an expression path) at the start of `code` after `prefix::`; pushes
/// each leaf path into `out`; returns the bytes consumed.
fn use_tree(code: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = code.as_bytes();
    let mut i = 0;
    let depth = prefix.len();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                let used = use_tree(&code[i..], prefix, out);
                i += used;
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                if used == 0 {
                    i += 1;
                }
            }
            prefix.truncate(depth);
            return i;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if start == i {
            break;
        }
        prefix.push(code[start..i].to_owned());
        if bytes[i..].starts_with(b"::") {
            i += 2;
            continue;
        }
        break;
    }
    out.push(prefix.clone());
    prefix.truncate(depth);
    i
}

/// The module a path from module `from` names: the longest known module that prefixes it.
fn resolve(from: &[String], path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    let mut absolute: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") => {
            absolute = from.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                absolute.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    absolute.extend(rest.iter().cloned());
    while !absolute.is_empty() && !modules.contains(&absolute) {
        absolute.pop();
    }
    absolute
}

/// Dependencies `(from, to)` between the sibling modules of one folder.
type Edges = BTreeSet<(String, String)>;

/// Dependencies between sibling modules, per parent folder (a module path).
fn sibling_edges(src: &Path) -> std::io::Result<BTreeMap<Vec<String>, Edges>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, Edges> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        let code = production_code(&std::fs::read_to_string(file)?);
        for path in paths(&code) {
            let to = resolve(&from, &path, &modules);
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if let (Some(a), Some(b)) = (from.get(common), to.get(common)) {
                edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .insert((a.clone(), b.clone()));
            }
        }
    }
    Ok(edges)
}

/// The modules reachable from `start` along `edges` (`start` only if a cycle leads back).
fn reachable<'a>(start: &'a str, edges: &'a Edges) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(node) = todo.pop() {
        for (a, b) in edges {
            if a == node && seen.insert(b.as_str()) {
                todo.push(b.as_str());
            }
        }
    }
    seen
}

/// Every import cycle in `edges`: the groups of modules that reach each other, each with the
/// path of one cycle through it (`a -> b -> a`).
fn cycles(edges: &Edges) -> Vec<String> {
    let nodes: BTreeSet<&str> = edges.iter().map(|(a, _)| a.as_str()).collect();
    let reach: BTreeMap<&str, BTreeSet<&str>> =
        nodes.iter().map(|&n| (n, reachable(n, edges))).collect();
    let mut grouped = BTreeSet::new();
    let mut found = Vec::new();
    for &node in &nodes {
        if grouped.contains(node) || !reach[node].contains(node) {
            continue;
        }
        let group: BTreeSet<&str> = reach[node]
            .iter()
            .copied()
            .filter(|&m| reach.get(m).is_some_and(|r| r.contains(node)))
            .collect();
        grouped.extend(group.iter().copied());
        // One cycle: from `node`, always step to a group member that leads back to `node`.
        let mut path = vec![node];
        let mut at = node;
        loop {
            let step = edges
                .iter()
                .filter(|(a, b)| a == at && group.contains(b.as_str()))
                .map(|(_, b)| b.as_str())
                .find(|&b| b == node || !path.contains(&b));
            match step {
                Some(b) if b == node => break,
                Some(b) => {
                    path.push(b);
                    at = b;
                }
                None => break,
            }
        }
        path.push(node);
        let members: Vec<&str> = group.into_iter().collect();
        found.push(format!(
            "{{{}}}, e.g. {}",
            members.join(", "),
            path.join(" -> ")
        ));
    }
    found
}

/// The top-level dependencies on a later layer, as `from -> to`, and the top-level modules
/// [`LAYERS`] does not place.
fn upward(edges: &Edges, modules: &BTreeSet<String>) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().position(|layer| layer.contains(&m));
    let mut found: Vec<String> = modules
        .iter()
        .filter(|m| layer(m).is_none())
        .map(|m| format!("{m} is in no layer"))
        .collect();
    for (from, to) in edges {
        if let (Some(a), Some(b)) = (layer(from), layer(to))
            && b > a
        {
            found.push(format!("{from} -> {to}"));
        }
    }
    found
}

#[test]
fn modules_depend_only_on_earlier_layers() -> std::io::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&src, f).first().cloned())
        .collect();
    let top = sibling_edges(&src)?.remove(&Vec::new()).unwrap_or_default();
    let found = upward(&top, &modules);
    assert!(
        found.is_empty(),
        "dependencies on a later layer (see LAYERS):\n{}",
        found.join("\n")
    );
    Ok(())
}

#[test]
fn a_dependency_on_a_later_layer_and_test_code_are_told_apart() {
    let edges: Edges = [("run", "table"), ("table", "run"), ("table", "hours")]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let modules: BTreeSet<String> = ["run", "table", "hours", "gadgets"]
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
    assert_eq!(
        upward(&edges, &modules),
        ["gadgets is in no layer", "table -> run"]
    );
    let code = "use crate::a;\n#[cfg(test)]\nfn helper() { crate::b::f({ 1 }); }\n\
                #[cfg(test)]\nmod t;\nuse crate::c;\n#[cfg(test)]\nmod tests { use crate::d; }";
    let found: Vec<String> = paths(&production_code(code))
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(found, ["crate::a", "crate::c"]);
}

#[test]
fn no_module_imports_itself_through_others() -> std::io::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (parent, edges) in sibling_edges(&src)? {
        let folder = if parent.is_empty() {
            "src/".to_owned()
        } else {
            format!("src/{}/", parent.join("/"))
        };
        found.extend(cycles(&edges).into_iter().map(|c| format!("{folder}: {c}")));
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
    Ok(())
}

/// The top-level modules whose production code names `krate` (as `krate::`).
fn modules_naming(src: &Path, krate: &str) -> std::io::Result<BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let needle = format!("{krate}::");
    let mut found = BTreeSet::new();
    for file in files {
        let code = production_code(&std::fs::read_to_string(&file)?);
        let names = code.match_indices(&needle).any(|(i, _)| {
            i == 0 || (!is_ident(code.as_bytes()[i - 1]) && code.as_bytes()[i - 1] != b':')
        });
        if names {
            found.insert(module_of(src, &file).first().cloned().unwrap_or_default());
        }
    }
    Ok(found)
}

#[test]
fn only_the_table_layer_uses_deltalake_and_only_storage_and_table_object_store()
-> std::io::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(
        modules_naming(&src, "deltalake")?,
        BTreeSet::from(["table".to_owned()])
    );
    assert_eq!(
        modules_naming(&src, "object_store")?,
        BTreeSet::from(["storage".to_owned(), "table".to_owned()])
    );
    Ok(())
}

#[test]
fn paths_and_groups_are_read() {
    let code = "use crate::{config::Config, table::{self, Table}};\nlet x = crate::hours::f();\n\
                use super::stream::read_ahead;";
    let found: Vec<String> = paths(code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "crate::config::Config",
            "crate::table::self",
            "crate::table::Table",
            "crate::hours::f",
            "super::stream::read_ahead"
        ]
    );
    let mut edges = BTreeSet::new();
    for (a, b) in [("run", "table"), ("table", "hours"), ("hours", "run")] {
        edges.insert((a.to_owned(), b.to_owned()));
    }
    edges.insert(("table".to_owned(), "config".to_owned()));
    assert_eq!(
        cycles(&edges),
        ["{hours, run, table}, e.g. hours -> run -> table -> hours"]
    );
    edges.remove(&("hours".to_owned(), "run".to_owned()));
    assert_eq!(cycles(&edges), Vec::<String>::new());
}
