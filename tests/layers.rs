//! The layers of the code depend one way, as `docs/design.md` describes them: no module of the
//! library refers to a module of a layer above its own. This test reads the sources and fails on
//! the first reference that points up, naming the file and the line.
//!
//! Unit tests beside the code (a `#[cfg(test)] mod` and the `tests.rs` files they load) are left
//! out: a test of a low layer may build a whole store to set up its scenario.

use std::path::{Path, PathBuf};

/// Every module of `src/`, with its layer (0 is the bottom). A longer path wins over a shorter
/// one (`metrics::handles` is at the bottom, the rest of `metrics` at the top).
const LAYERS: &[(&str, u8)] = &[
    ("cipher", 0),
    ("format", 0),
    ("types", 0),
    ("error", 0),
    ("event", 0),
    ("name", 0),
    ("cluster::error", 0),
    ("cluster::config", 0),
    ("crypto", 1),
    ("env", 1),
    ("metrics::handles", 1),
    ("metrics::names", 1),
    ("index", 2),
    ("log", 2),
    ("schema", 2),
    ("write", 3),
    ("append", 4),
    ("read", 4),
    ("store", 4),
    ("subscribe", 4),
    ("cluster", 4),
    ("admin", 5),
    ("metrics", 5),
    ("failpoints", 5),
    ("fuzzing", 5),
    // The original design's paths, in the crate root.
    ("engine", 5),
    ("storage", 5),
];

/// The layer of a module path such as `env::write` or `metrics::handles`.
fn layer_of(path: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(m, _)| path == *m || path.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
        .map(|(_, l)| *l)
}

/// The module path of a source file: `src/env/write.rs` is `env::write`, `src/env/mod.rs` is
/// `env`.
fn module_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

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

/// The `crate::a::b` paths a line of code refers to (comments left out): as far as they name
/// modules, in lower case.
fn references(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let modules: Vec<&str> = path
            .split("::")
            .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .collect();
        out.push(modules.join("::"));
    }
    out
}

#[test]
fn no_module_refers_to_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut checked = 0;
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(file, &src);
        if module == "lib" {
            // The crate root re-exports the public API of every layer.
            continue;
        }
        if module == "tests" || module.ends_with("::tests") {
            continue;
        }
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("{module} ({}) has no layer in LAYERS", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // The library code: up to the first unit-test module.
        let end = lines
            .windows(2)
            .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
            .unwrap_or(lines.len());
        for (n, line) in lines[..end].iter().enumerate() {
            for target in references(line) {
                checked += 1;
                let layer = match layer_of(&target) {
                    Some(layer) => layer,
                    // `crate::Item`: an item re-exported at the root, which only the top layer
                    // uses.
                    None if target.is_empty() => 5,
                    None => panic!("{}:{}: crate::{target} has no layer", file.display(), n + 1),
                };
                if layer > own {
                    upward.push(format!(
                        "{}:{}: {module} (layer {own}) refers to crate::{target} (layer {layer})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        checked > 200,
        "only {checked} references found: is the parser broken?"
    );
    assert!(
        upward.is_empty(),
        "references that point up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_reference() {
    assert_eq!(
        references("use crate::store::Storage; // crate::x"),
        ["store"]
    );
    assert_eq!(references("let x = crate::Error::Poisoned;"), [""]);
    assert_eq!(layer_of("metrics::handles"), Some(1));
    assert_eq!(layer_of("metrics"), Some(5));
    assert_eq!(layer_of("env::write"), Some(1));
}
