//! The top-level modules of skiff-control import each other in one direction:
//! this scans `src/**.rs` for paths that reach another top-level module
//! (`crate::x`, `super::` chains that climb to the crate root, grouped
//! `use crate::{x, y}`) and fails on any cycle, printing the edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source with comments, string and char literals blanked out (lengths
/// kept), so paths in docs and messages do not count.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
        } else if (rest.starts_with(b"r#") || rest.starts_with(b"r\""))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // Raw string: r"..." or r#"..."#.
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let start = i + 2 + hashes;
            let end = b[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| start + p + close.len());
            out.extend(std::iter::repeat_n(b' ', end - i));
            i = end;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let n = if b[i] == b'\\' { 2 } else { 1 };
                for _ in 0..n.min(b.len() - i) {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('a', '\n', '\''), not a lifetime ('a).
            let lit = if rest.get(1) == Some(&b'\\') {
                rest.iter().skip(3).position(|&c| c == b'\'').map(|p| p + 4)
            } else if rest.get(2) == Some(&b'\'') {
                Some(3)
            } else {
                None
            };
            match lit {
                Some(n) => {
                    out.extend(std::iter::repeat_n(b' ', n));
                    i += n;
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The first segment of each item of a `{a::b, c, d::{e}}` group at `i`
/// (just after the `{`).
fn group_heads(s: &[u8], mut i: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut want = true;
    let mut depth = 0;
    while i < s.len() {
        match s[i] {
            b'{' => depth += 1,
            b'}' if depth == 0 => break,
            b'}' => depth -= 1,
            b',' if depth == 0 => want = true,
            c if want && (c.is_ascii_alphabetic() || c == b'_') => {
                let (id, j) = ident_at(s, i);
                heads.push(id);
                want = false;
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The crate-root names a file's code refers to: `crate::x`, and `super::`
/// chains that climb past the file's module (`mod_path`, with inline `mod m {`
/// blocks counted as they open and close).
fn root_refs(code: &str, mod_path: &[String]) -> BTreeSet<String> {
    let s = code.as_bytes();
    let mut refs = BTreeSet::new();
    let mut depth = 0usize;
    // Brace depths at which inline modules opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut i = 0;
    let boundary = |i: usize| i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_');
    while i < s.len() {
        let c = s[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            depth = depth.saturating_sub(1);
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if !boundary(i) || !(c.is_ascii_alphabetic() || c == b'_') {
            i += 1;
            continue;
        }
        let (word, j) = ident_at(s, i);
        if word == "mod" {
            let k = skip_ws(s, j);
            let (_, k) = ident_at(s, k);
            let k = skip_ws(s, k);
            if s.get(k) == Some(&b'{') {
                inline.push(depth);
            }
            i = j;
            continue;
        }
        let level = mod_path.len() + inline.len();
        let mut k = j;
        let mut at_root = false;
        if word == "crate" && s[k..].starts_with(b"::") {
            at_root = true;
            k += 2;
        } else if word == "super" && s[k..].starts_with(b"::") {
            let mut ups = 1;
            k += 2;
            while s[k..].starts_with(b"super::") {
                ups += 1;
                k += 7;
            }
            at_root = ups >= level;
        }
        if at_root {
            k = skip_ws(s, k);
            if s.get(k) == Some(&b'{') {
                refs.extend(group_heads(s, k + 1));
            } else {
                let (id, _) = ident_at(s, k);
                if !id.is_empty() {
                    refs.insert(id);
                }
            }
        }
        i = k.max(j);
    }
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`api/rest.rs` -> [api, rest]).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        f => parts.push(f.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// Edges between top-level modules: (from, to) -> the files that make them.
type Edges = BTreeMap<(String, String), BTreeSet<String>>;

/// The top-level modules lib.rs declares, and the edges between them.
fn edges(src: &Path) -> (BTreeSet<String>, Edges) {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let tops: BTreeSet<String> = code_only(&lib)
        .lines()
        .filter_map(|l| {
            let l = l
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out = Edges::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        let path = module_path(rel);
        let Some(top) = path.first().cloned() else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&f).expect("read source"));
        for r in root_refs(&code, &path) {
            if r != top && tops.contains(&r) {
                out.entry((top.clone(), r))
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    (tops, out)
}

/// A cycle in the graph, if any (as a path that returns to its start).
fn find_cycle(nodes: &BTreeSet<String>, edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeSet<(String, String)>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for (_, to) in edges.iter().filter(|(from, _)| from == n) {
            match state.get(to).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == to).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(to.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(to, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in nodes {
        if state.get(n).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The modules bottom-up (each after everything it imports).
fn layers(nodes: &BTreeSet<String>, edges: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut done: Vec<String> = Vec::new();
    while done.len() < nodes.len() {
        let next: Vec<String> = nodes
            .iter()
            .filter(|n| !done.contains(n))
            .filter(|n| {
                edges
                    .iter()
                    .filter(|(from, _)| from == *n)
                    .all(|(_, to)| done.contains(to))
            })
            .cloned()
            .collect();
        if next.is_empty() {
            break;
        }
        done.extend(next);
    }
    done
}

#[test]
fn top_level_modules_import_each_other_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (tops, found) = edges(&src);
    for m in [
        "store",
        "model",
        "storage",
        "api",
        "controllers",
        "server",
        "cluster",
    ] {
        assert!(tops.contains(m), "lib.rs declares no module {m}");
    }
    for ((from, to), files) in &found {
        let list: Vec<&str> = files.iter().map(String::as_str).collect();
        println!("{from} -> {to}: {}", list.join(", "));
    }
    let graph: BTreeSet<(String, String)> = found.keys().cloned().collect();
    if let Some(cycle) = find_cycle(&tops, &graph) {
        panic!(
            "the top-level modules of skiff-control import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
    println!("bottom-up: {}", layers(&tops, &graph).join(", "));
    // The storage layer sits beneath HTTP and the loops that use it.
    assert!(!graph.contains(&("storage".into(), "api".into())));
    assert!(graph.contains(&("api".into(), "storage".into())));
    // Controllers (the scheduler among them) reach the API as clients do,
    // through kube's client, never through the HTTP layer's code.
    assert!(!graph.contains(&("controllers".into(), "api".into())));
}

#[test]
fn scanner_sees_every_path_form_and_ignores_comments_and_strings() {
    let code = code_only(
        r#"
use crate::{model::status::ApiResult, storage};
use super::super::images::Reference;
// crate::metrics in a comment
/* crate::server in a block */
const S: &str = "crate::controllers";
fn f() { let _ = crate::store::Op::delete; let c = '{'; }
mod tests {
    use super::super::agents::client;
    use super::*;
}
"#,
    );
    let refs = root_refs(&code, &["api".to_string(), "rest".to_string()]);
    let want: BTreeSet<String> = ["model", "storage", "images", "store"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(refs, want);
    // One level deeper (`api/portforward/spdy.rs`), `super::super` stays in `api`.
    let refs = root_refs(
        &code_only("use super::super::podlog::x;"),
        &["api".into(), "portforward".into(), "spdy".into()],
    );
    assert!(refs.is_empty(), "{refs:?}");
}

#[test]
fn cycles_are_found() {
    let nodes: BTreeSet<String> = ["a", "b", "c"].into_iter().map(str::to_string).collect();
    let e = |v: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(find_cycle(&nodes, &e(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        layers(&nodes, &e(&[("a", "b"), ("b", "c")])),
        ["c", "b", "a"]
    );
    let c = find_cycle(&nodes, &e(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(c.first(), c.last());
    assert_eq!(c.len(), 4);
}
