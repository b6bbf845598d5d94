//! The module map holds: no crate's modules import each other in a circle (top-level
//! modules, and the files of each folder among themselves), and `orchestrator` and its
//! `daemon` folder only import in the directions their docs draw (`orchestrator/src/lib.rs`
//! `# Layout`, `orchestrator/src/daemon/mod.rs`). Reads the sources; needs nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The modules of a folder (`src/` or a folder module): each `NAME.rs` (but `lib.rs`,
/// `main.rs`, `mod.rs`) and each `NAME/` with the files that belong to it.
fn modules(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            out.entry(name).or_default().extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs")
            && !["lib", "main", "mod"].contains(&name.as_str())
        {
            out.entry(name).or_default().push(p);
        }
    }
    out
}

/// The first path segments after each `PREFIX::` in `text` (`crate::a::b` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`).
fn named_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    let needle = format!("{prefix}::");
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        let before = rest[..i].chars().last();
        rest = &rest[i + needle.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::x`, `my_crate::x`: not this prefix
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(ident));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `text` without its comment lines (doc comments may name any module).
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module → the modules of the same folder it names through `prefix`.
fn graph(dir: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(dir);
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(name, files)| {
            let mut uses = BTreeSet::new();
            for f in files {
                let text = std::fs::read_to_string(f).unwrap();
                uses.extend(named_after(&code_only(&text), prefix));
            }
            uses.retain(|u| u != name && known.contains(u));
            (name.clone(), uses)
        })
        .collect()
}

/// A cycle in `g`, if there is one, as the path that closes it.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut c = path[i..].to_vec();
            c.push(at.to_owned());
            return Some(c);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in g.get(at).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|k| visit(g, k, &mut Vec::new(), &mut done))
}

/// Every folder of `src` that holds modules of its own (`daemon/`, `sync/`, …).
fn folders(src: &Path) -> Vec<PathBuf> {
    let mut out = vec![src.to_owned()];
    let mut i = 0;
    while i < out.len() {
        for e in std::fs::read_dir(&out[i]).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push(p);
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_crate_has_an_import_cycle() {
    for krate in ["orchestrator", "agent", "tunnel"] {
        let src = workspace().join(krate).join("src");
        for dir in folders(&src) {
            let prefix = if dir == src { "crate" } else { "super" };
            let g = graph(&dir, prefix);
            assert!(
                cycle(&g).is_none(),
                "{}: modules import each other in a circle: {}",
                dir.display(),
                cycle(&g).unwrap().join(" → ")
            );
        }
    }
}

/// `g` only points from a layer to a later one.
fn check_layers(what: &str, g: &BTreeMap<String, BTreeSet<String>>, layers: &[&[&str]]) {
    let layer = |m: &str| layers.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (m, uses) in g {
        let Some(from) = layer(m) else {
            wrong.push(format!("{m} is in no layer (add it to the docs and here)"));
            continue;
        };
        for u in uses {
            match layer(u) {
                Some(to) if to > from => {}
                _ => wrong.push(format!("{m} → {u}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: imports against the documented direction: {wrong:?}"
    );
}

#[test]
fn orchestrator_modules_import_only_downwards() {
    let src = workspace().join("orchestrator/src");
    // orchestrator/src/lib.rs, `# Layout`.
    check_layers(
        "orchestrator",
        &graph(&src, "crate"),
        &[
            &["cli"],
            &["daemon"],
            &["playbook"],
            &["api"],
            &["databases"],
            &["cluster", "dns", "mail", "notify", "report"],
            &["config"],
            &["units", "logging"],
        ],
    );
    // orchestrator/src/daemon/mod.rs.
    check_layers(
        "orchestrator::daemon",
        &graph(&src.join("daemon"), "super"),
        &[
            &["metrics"],
            &["control"],
            &["peering"],
            &["push"],
            &["reports", "dbcheck", "receive", "failover"],
            &["alerts", "space", "ddns", "outbox", "probes"],
            &["roles"],
        ],
    );
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for m in modules(&src).keys() {
        assert!(
            lib.contains(&format!("[`{m}`]")) || lib.contains(&format!("`{m}`")),
            "lib.rs's # Layout names every top-level module: {m} is missing"
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_and_grouped_imports() {
    let uses = named_after(
        "use crate::{a, b::c};\nlet x = crate::d::e;\nsuper::super::f;\nmy_crate::g",
        "crate",
    );
    assert_eq!(uses, BTreeSet::from(["a".into(), "b".into(), "d".into()]));
    assert!(named_after(
        &code_only("//! see crate::x\n/// crate::y\nfn f() {}"),
        "crate"
    )
    .is_empty());
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("x".to_owned(), BTreeSet::from(["y".to_owned()])),
        ("y".to_owned(), BTreeSet::from(["z".to_owned()])),
        ("z".to_owned(), BTreeSet::from(["x".to_owned()])),
    ]
    .into();
    assert_eq!(cycle(&g).unwrap(), ["x", "y", "z", "x"]);
}
