//! The README names only things that exist. Its Rust code blocks are compiled and run as
//! doctests (`ReadmeDoctests` in `tests/src/lib.rs`); this test covers the prose: every type
//! (`Principal`) or path (`Permission::AccessAllTeams`, `tenantkit_auth::flows`) the README
//! names in backticks must appear, segment by segment, as a word of the workspace's Rust
//! sources. A renamed or removed item named by the README fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The identifiers named in backticks that look like Rust items: a path with `::`, or an
/// UpperCamelCase name (one uppercase first letter and a lowercase letter somewhere). Plain
/// words, environment variables (`DATABASE_URL`) and snake_case test or file names are left
/// to the reader.
fn named_items(markdown: &str) -> BTreeSet<String> {
    // The prose without the fenced blocks (code spans may run over a line break).
    let mut prose = String::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(paths_in)
        .collect()
}

/// The candidate item paths in one code span.
fn paths_in(span: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut chars = span.chars().peekable();
    let flush = |current: &mut String, found: &mut Vec<String>| {
        let path = current.trim_matches(':').to_owned();
        current.clear();
        let looks_like_item = path.contains("::") || is_upper_camel(&path);
        if looks_like_item && !path.is_empty() {
            found.push(path);
        }
    };
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            current.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            current.push_str("::");
        } else {
            flush(&mut current, &mut found);
        }
    }
    flush(&mut current, &mut found);
    found
}

fn is_upper_camel(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().any(|c| c.is_ascii_lowercase())
        && !word.contains('_')
}

/// The words (identifiers) of every `.rs` file under `dir`, `target` and hidden folders left
/// out, and this file too (its example of a removed name must not count as code).
fn collect_words(dir: &Path, words: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_words(&path, words);
            }
        } else if name.ends_with(".rs") && !path.ends_with(file!()) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            words.extend(
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned),
            );
        }
    }
}

/// The names of `markdown` of which some segment is no word of `words`.
fn missing(markdown: &str, words: &BTreeSet<String>) -> Vec<String> {
    named_items(markdown)
        .into_iter()
        .filter(|path| path.split("::").any(|segment| !words.contains(segment)))
        .collect()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace folder")
        .to_owned()
}

#[test]
fn every_item_the_readme_names_exists() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut words = BTreeSet::new();
    collect_words(&root, &mut words);
    assert!(
        words.contains("TenantTx") && words.contains("Principal"),
        "the sources were not read from {}",
        root.display()
    );
    let missing = missing(&readme, &words);
    assert!(
        missing.is_empty(),
        "README.md names items that are not in the code: {missing:?}"
    );
}

#[test]
fn a_removed_item_named_by_the_readme_is_found() {
    let words: BTreeSet<String> = [
        "Permission",
        "AccessAllTeams",
        "Principal",
        "tenantkit_auth",
        "flows",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let readme = "Admins hold `Permission::AccessAllTeams`, not \
                  `Permission::AccessRestrictedProjects`; see `tenantkit_auth::flows` and \
                  `Principal`, set `DATABASE_URL`, run `billing_crash`.\n\
                  ```rust\nlet x = Gone::Item;\n```\n";
    assert_eq!(
        missing(readme, &words),
        ["Permission::AccessRestrictedProjects"]
    );
}
