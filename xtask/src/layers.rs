//! The one-way layers (ARCHITECTURE.md), checked: within each crate, the
//! top-level modules (the folders and files directly under `src/`) must not
//! import each other in a circle. `cargo xtask test` runs this before the
//! tests, so a new circle fails CI naming the modules and the files that
//! close it.
//!
//! It reads `crate::…` paths as text (`use crate::{a, b::c}` groups
//! included), leaving out test code (`tests.rs` files and everything after
//! a `#[cfg(test)]` line), which may reach anywhere. Reading text rather
//! than resolving names is enough here: the code names other modules only
//! through `crate::` (siblings inside one module use `super::`, which never
//! leaves it).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// The crates checked, by their `src` folder.
const CRATES: &[&str] = &[
    "sockmon/src",
    "sockmon-ebpf/src",
    "sockmon-common/src",
    "sockmon-bench/src",
    "sockmon-testkit/src",
    "xtask/src",
];

/// Module → the modules it imports → one file that does.
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut circles = Vec::new();
    for krate in CRATES {
        let src = root.join(krate);
        let graph = graph(&src)?;
        for circle in cycles(&graph) {
            circles.push(describe(krate, &circle, &graph, root));
        }
    }
    if !circles.is_empty() {
        bail!(
            "imports between top-level modules run in a circle (ARCHITECTURE.md: layers run one way):\n{}",
            circles.join("\n")
        );
    }
    eprintln!(
        "xtask: top-level modules import one way in {}",
        CRATES.join(", ")
    );
    Ok(())
}

fn describe(krate: &str, circle: &[String], graph: &Graph, root: &Path) -> String {
    let mut hops = Vec::new();
    for (i, m) in circle.iter().enumerate() {
        let next = &circle[(i + 1) % circle.len()];
        let file = graph[m][next].strip_prefix(root).unwrap_or(&graph[m][next]);
        hops.push(format!("{m} → {next} ({})", file.display()));
    }
    format!("  {krate}: {}", hops.join(", "))
}

/// The top-level modules of `src` and what each imports.
fn graph(src: &Path) -> anyhow::Result<Graph> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir() || path.extension().is_some_and(|e| e == "rs") {
            modules.insert(name);
        }
    }
    for root_file in ["lib", "main"] {
        modules.remove(root_file);
    }
    let mut graph = Graph::new();
    for m in &modules {
        let mut files = Vec::new();
        let dir = src.join(m);
        if dir.is_dir() {
            rust_files(&dir, &mut files)?;
        }
        let file = src.join(format!("{m}.rs"));
        if file.is_file() {
            files.push(file);
        }
        let edges = graph.entry(m.clone()).or_default();
        for f in files {
            let text =
                fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            for used in crate_paths(&code_only(non_test(&text))) {
                if used != *m && modules.contains(&used) {
                    edges.entry(used).or_insert_with(|| f.clone());
                }
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The text before the first `#[cfg(test)]` line.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// `text` without its comment lines (doc links name modules too).
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path in `text`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `sockmon_crate::`, say
        }
        if let Some(group) = rest.strip_prefix('{') {
            first_segments(group, &mut out);
        } else {
            out.insert(ident(rest).to_string());
        }
    }
    out
}

/// The first segment of each item of a `{a, b::c, d::{e, f}}` group.
fn first_segments(group: &str, out: &mut BTreeSet<String>) {
    let mut depth = 0;
    let mut at_item = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && depth == 0 && (c.is_alphabetic() || c == '_') => {
                out.insert(ident(&group[i..]).to_string());
                at_item = false;
            }
            _ => {}
        }
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every elementary circle's smallest form, found by a depth-first walk
/// from each module (the graphs have a few dozen nodes).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in g.keys() {
        let mut path = vec![start.clone()];
        walk(g, start, &mut path, &mut found);
    }
    found.into_iter().collect()
}

fn walk(g: &Graph, start: &str, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
    let here = path.last().cloned().unwrap_or_default();
    for next in g.get(&here).map(|e| e.keys()).into_iter().flatten() {
        if next == start {
            // Rotate so the circle starts at its smallest name: one form each.
            let min = path
                .iter()
                .enumerate()
                .min_by_key(|(_, m)| *m)
                .map_or(0, |(i, _)| i);
            let mut c = path.clone();
            c.rotate_left(min);
            found.insert(c);
        } else if !path.contains(next) && next.as_str() > start {
            path.push(next.clone());
            walk(g, start, path, found);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_paths_and_groups() {
        let text = "use crate::{api::x, engine::{a, b}, event};\nfn f() { crate::procfs::pids(); }\nlet my_crate::x = 1;";
        let got: Vec<String> = crate_paths(text).into_iter().collect();
        assert_eq!(got, ["api", "engine", "event", "procfs"]);
    }

    #[test]
    fn test_code_and_comments_are_left_out() {
        assert_eq!(non_test("a\n#[cfg(test)]\nuse crate::x;"), "a\n");
        assert_eq!(
            code_only("/// [`crate::x`]\nuse crate::y;"),
            "use crate::y;"
        );
    }

    #[test]
    fn finds_each_circle_once() {
        let edge = |a: &str, bs: &[&str]| {
            (
                a.to_string(),
                bs.iter()
                    .map(|b| (b.to_string(), PathBuf::from(a)))
                    .collect(),
            )
        };
        let g: Graph = [
            edge("a", &["b"]),
            edge("b", &["c"]),
            edge("c", &["a", "d"]),
            edge("d", &[]),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            cycles(&g),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
        let acyclic: Graph = [edge("a", &["b"]), edge("b", &[])].into_iter().collect();
        assert!(cycles(&acyclic).is_empty());
    }

    #[test]
    fn this_tree_imports_one_way() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check(root).unwrap();
    }
}
