//! Issue 21: the codebase stays one a newcomer can follow. Walks every Rust
//! source file of the library, the binaries and the workspace crates, parses
//! it with `syn`, and fails on
//!
//! - a source file over [`MAX_FILE_LINES`] lines, not counting test code
//!   (`tests.rs`, files declared by `#[cfg(test)] mod x;`, and `#[cfg(test)]`
//!   items inside a file);
//! - a function (free, method, trait default, nested) over [`MAX_FN_LINES`]
//!   lines, from `fn` to its closing brace, outside tests;
//! - a top-level module of the library that names (`use crate::x` or a
//!   `crate::x::...` path) a module [`LAYERS`] does not allow it.
//!
//! Today's offenders are listed in [`FILE_ALLOW`], [`FN_ALLOW`] and
//! [`EDGE_ALLOW`] so the test passes; an entry that no longer offends fails
//! the test too, so the lists only shrink. docs/architecture.md explains the
//! layering. No root, no containers.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// No source file over this many lines, tests excluded.
const MAX_FILE_LINES: usize = 600;
/// No function over this many lines, tests excluded.
const MAX_FN_LINES: usize = 80;

/// Which top-level module of the library may name which other one, lowest
/// layer first. A module not listed here is an error: adding a module means
/// placing it in the layering.
const LAYERS: &[(&str, &[&str])] = &[
    // Leaves: no `crate::` at all.
    ("ipc", &[]),
    ("logging", &[]),
    ("stdout", &[]),
    ("statedir", &[]),
    ("policy", &[]),
    // Acting with a sandbox's rights: its credentials, paths in its root.
    ("deputy", &[]),
    // Records and the spec, built from policy data.
    // deputy: the log's rotation runs with the supervisor's rights on a
    // thread that holds a worker's (creds::as_supervisor).
    ("audit", &["policy", "statedir", "deputy"]),
    ("proxy", &["policy", "audit"]),
    // The proxy's port is the one thing the spec takes from it.
    ("spec", &["policy", "proxy"]),
    ("landlock", &["policy", "spec"]),
    ("exeseal", &["policy", "spec", "landlock"]),
    // The pipeline: policy + bundle + mode -> effective spec, plans, files.
    (
        "prepare",
        &[
            "policy", "spec", "landlock", "exeseal", "statedir", "proxy", "audit", "ipc",
        ],
    ),
    // Learning: audit records and observations -> a policy.
    (
        "learn",
        &[
            "policy", "audit", "spec", "statedir", "logging", "proxy", "deputy",
        ],
    ),
    // The per-sandbox supervisor: brokers requests, never creates containers.
    (
        "supervisor",
        &[
            "ipc", "logging", "policy", "audit", "statedir", "spec", "landlock", "exeseal",
            "proxy", "learn", "deputy",
        ],
    ),
    // The runtime: creates containers and starts their supervisor.
    (
        "runtime",
        &[
            "ipc",
            "logging",
            "stdout",
            "statedir",
            "policy",
            "audit",
            "spec",
            "landlock",
            "proxy",
            "exeseal",
            "prepare",
            "learn",
            "supervisor",
        ],
    ),
    // `buntime-runc audit --follow`: a container's audit log by id, while
    // its supervisor runs.
    (
        "audit_follow",
        &["audit", "statedir", "runtime", "supervisor"],
    ),
    // The debug UI reads state dirs and audit logs; `buntime run --ui` starts it.
    (
        "ui",
        &[
            "logging",
            "statedir",
            "policy",
            "audit",
            "audit_follow",
            "spec",
            "proxy",
            "learn",
            "supervisor",
            "runtime",
        ],
    ),
    // `buntime run`: one script in a sandbox, on top of everything else.
    (
        "sandbox",
        &[
            "ipc",
            "logging",
            "stdout",
            "statedir",
            "policy",
            "audit",
            "audit_follow",
            "spec",
            "landlock",
            "proxy",
            "exeseal",
            "prepare",
            "learn",
            "supervisor",
            "runtime",
            "ui",
            "deputy",
        ],
    ),
];

/// Layering violations tolerated (module, module it names). Empty: keep it so.
const EDGE_ALLOW: &[(&str, &str)] = &[];

/// Today's oversize files (path from the workspace root). Shrink only.
const FILE_ALLOW: &[&str] = &[];

/// Today's oversize functions (file, function name). Shrink only.
const FN_ALLOW: &[(&str, &str)] = &[];

/// A Rust source file and what it says.
struct Source {
    /// Relative to the workspace root, `/`-separated.
    rel: String,
    file: syn::File,
    /// Lines of the file, tests excluded.
    lines: usize,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source roots: the library and binaries, and each workspace crate's.
fn source_roots() -> Vec<PathBuf> {
    let mut roots = vec![root().join("src")];
    if let Ok(entries) = fs::read_dir(root().join("crates")) {
        let mut crates: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        crates.sort();
        roots.extend(crates.into_iter().map(|c| c.join("src")));
    }
    roots.into_iter().filter(|r| r.is_dir()).collect()
}

/// `#[cfg(test)]`, `#[cfg(all(test, ...))]` or `#[test]`.
fn is_test_attr(attr: &syn::Attribute) -> bool {
    if attr.path().is_ident("test") {
        return true;
    }
    if !attr.path().is_ident("cfg") {
        return false;
    }
    let Ok(list) = attr.meta.require_list() else {
        return false;
    };
    let cfg: String = list.tokens.to_string().split_whitespace().collect();
    cfg == "test" || cfg.starts_with("all(test,")
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(is_test_attr)
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

/// Lines taken by test-only items, at any depth.
fn test_lines(items: &[syn::Item]) -> usize {
    let mut n = 0;
    for item in items {
        if is_test(item_attrs(item)) {
            let first = item_attrs(item)
                .first()
                .map_or(item.span().start().line, |a| a.span().start().line);
            n += item.span().end().line + 1 - first;
        } else if let syn::Item::Mod(m) = item {
            if let Some((_, inner)) = &m.content {
                n += test_lines(inner);
            }
        }
    }
    n
}

/// Files declared by `#[cfg(test)] mod x;` in `path`: tests, wholly.
fn test_children(path: &Path, file: &syn::File) -> Vec<PathBuf> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = if matches!(stem, "mod" | "lib" | "main") {
        parent.to_path_buf()
    } else {
        parent.join(stem)
    };
    let mut out = Vec::new();
    for item in &file.items {
        if let syn::Item::Mod(m) = item {
            if m.content.is_none() && is_test(&m.attrs) {
                let name = m.ident.to_string();
                out.push(dir.join(format!("{name}.rs")));
                out.push(dir.join(&name).join("mod.rs"));
            }
        }
    }
    out
}

/// Parses every non-test source file.
fn sources() -> Vec<Source> {
    let mut paths = Vec::new();
    for r in source_roots() {
        rust_files(&r, &mut paths);
    }
    let mut parsed = Vec::new();
    let mut test_files = BTreeSet::new();
    for p in paths {
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()));
        test_files.extend(test_children(&p, &file));
        parsed.push((p, text, file));
    }
    let root = root();
    parsed
        .into_iter()
        .filter(|(p, _, _)| {
            p.file_name().is_some_and(|n| n != "tests.rs")
                && !test_files.contains(p)
                && !p
                    .strip_prefix(&root)
                    .unwrap_or(p)
                    .components()
                    .any(|c| c.as_os_str() == "tests")
        })
        .map(|(p, text, file)| Source {
            rel: p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/"),
            lines: text.lines().count() - test_lines(&file.items),
            file,
        })
        .collect()
}

/// Collects functions longer than [`MAX_FN_LINES`], skipping test code.
#[derive(Default)]
struct LongFns {
    found: Vec<(String, usize)>,
}

impl LongFns {
    fn check(&mut self, sig: &syn::Signature, body: &syn::Block) {
        let lines = body.brace_token.span.close().end().line + 1 - sig.fn_token.span.start().line;
        if lines > MAX_FN_LINES {
            self.found.push((sig.ident.to_string(), lines));
        }
    }
}

impl<'a> Visit<'a> for LongFns {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_impl(&mut self, i: &'a syn::ItemImpl) {
        if !is_test(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if !is_test(&f.attrs) {
            self.check(&f.sig, &f.block);
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        if !is_test(&f.attrs) {
            self.check(&f.sig, &f.block);
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let (false, Some(body)) = (is_test(&f.attrs), &f.default) {
            self.check(&f.sig, body);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Collects the top-level modules a file names through `crate::`, outside
/// test code.
#[derive(Default)]
struct CrateUses {
    used: BTreeSet<String>,
}

impl CrateUses {
    fn tree(&mut self, t: &syn::UseTree, at_crate: bool) {
        match t {
            syn::UseTree::Path(p) if p.ident == "crate" => self.tree(&p.tree, true),
            syn::UseTree::Path(p) if at_crate => {
                self.used.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if at_crate => {
                self.used.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if at_crate => {
                self.used.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|i| self.tree(i, at_crate)),
            _ => {}
        }
    }
}

impl<'a> Visit<'a> for CrateUses {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if !is_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        if !is_test(&u.attrs) {
            self.tree(&u.tree, false);
        }
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let mut segs = p.segments.iter();
        if let (Some(first), Some(second)) = (segs.next(), segs.next()) {
            if first.ident == "crate" {
                self.used.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'a syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

impl CrateUses {
    /// `crate::x` inside a macro's arguments (`matches!`, `format!`, ...),
    /// which `syn` leaves as tokens.
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree;
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tt) in tts.iter().enumerate() {
            match tt {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" => {
                    if let [TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(m), ..] =
                        &tts[i + 1..]
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            self.used.insert(m.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The library's top-level module a file under `src/` belongs to; `None`
/// for binaries, `lib.rs` and other crates.
fn top_module(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix("src/")?;
    if rest.starts_with("bin/") || rest == "lib.rs" {
        return None;
    }
    let first = rest.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// Fails with every problem at once, and with the allowlist entries that no
/// longer apply.
fn report(what: &str, problems: Vec<String>, stale: Vec<String>) {
    let mut msg = String::new();
    if !problems.is_empty() {
        msg += &format!("{what}:\n  {}\n", problems.join("\n  "));
    }
    if !stale.is_empty() {
        msg += &format!(
            "{what}: allowlisted but no longer offending, remove from the list:\n  {}\n",
            stale.join("\n  ")
        );
    }
    assert!(msg.is_empty(), "{msg}");
}

#[test]
fn no_source_file_over_the_limit() {
    let mut over = BTreeSet::new();
    let mut problems = Vec::new();
    for s in sources() {
        if s.lines > MAX_FILE_LINES {
            over.insert(s.rel.clone());
            if !FILE_ALLOW.contains(&s.rel.as_str()) {
                problems.push(format!(
                    "{}: {} lines (max {MAX_FILE_LINES})",
                    s.rel, s.lines
                ));
            }
        }
    }
    let stale = FILE_ALLOW
        .iter()
        .filter(|f| !over.contains(**f))
        .map(|f| f.to_string())
        .collect();
    report("files over the limit", problems, stale);
}

#[test]
fn no_function_over_the_limit() {
    let mut over = BTreeSet::new();
    let mut problems = Vec::new();
    for s in sources() {
        let mut v = LongFns::default();
        v.visit_file(&s.file);
        for (name, lines) in v.found {
            if !FN_ALLOW.contains(&(s.rel.as_str(), name.as_str())) {
                problems.push(format!("(\"{}\", \"{name}\"), // {lines} lines", s.rel));
            }
            over.insert((s.rel.clone(), name));
        }
    }
    let stale = FN_ALLOW
        .iter()
        .filter(|(f, n)| !over.contains(&(f.to_string(), n.to_string())))
        .map(|(f, n)| format!("(\"{f}\", \"{n}\")"))
        .collect();
    report(
        &format!("functions over {MAX_FN_LINES} lines"),
        problems,
        stale,
    );
}

#[test]
fn modules_use_only_lower_layers() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for s in sources() {
        let Some(module) = top_module(&s.rel) else {
            continue;
        };
        let Some(allowed) = layers.get(module) else {
            problems.push(format!("{}: module `{module}` is not in LAYERS", s.rel));
            continue;
        };
        let mut v = CrateUses::default();
        v.visit_file(&s.file);
        for used in v
            .used
            .iter()
            .filter(|u| *u != module && layers.contains_key(u.as_str()))
        {
            let edge = (module, used.as_str());
            if allowed.contains(&used.as_str()) {
                continue;
            }
            if !EDGE_ALLOW.contains(&edge) {
                problems.push(format!("{}: `{module}` uses `crate::{used}`", s.rel));
            }
            seen.insert((module.to_string(), used.clone()));
        }
    }
    let stale = EDGE_ALLOW
        .iter()
        .filter(|(a, b)| !seen.contains(&(a.to_string(), b.to_string())))
        .map(|(a, b)| format!("(\"{a}\", \"{b}\")"))
        .collect();
    report("layering", problems, stale);
}

/// The table itself has no cycle: a layer uses only modules listed before it.
#[test]
fn layers_are_ordered() {
    let mut before = BTreeSet::new();
    for (module, allowed) in LAYERS {
        for a in *allowed {
            assert!(
                before.contains(a),
                "LAYERS: `{module}` may use `{a}`, which is not listed before it"
            );
        }
        before.insert(*module);
    }
}
