//! The docs and the code name the same things: every configuration key, command-line
//! flag and metric the code has is documented, and every one the docs name exists.
//! A key, flag or metric added without its docs fails here, and so does a doc that
//! outlives what it describes.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use regex_lite::Regex;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every Markdown page a user reads: the README and docs/.
fn docs() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), read("README.md"))];
    let mut pages: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    for p in pages {
        let text = std::fs::read_to_string(&p).unwrap();
        out.push((p.display().to_string(), text));
    }
    out
}

/// Keys of the configuration: the fields of every section struct (serde renames
/// applied), read from the source.
fn code_keys() -> BTreeSet<String> {
    let field = Regex::new(r"^\s*pub (\w+):").unwrap();
    let rename = Regex::new(r#"#\[serde\(rename = "(\w+)"\)\]"#).unwrap();
    let mut keys = BTreeSet::new();
    for f in std::fs::read_dir(root().join("src/config"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(f.path()).unwrap();
        let mut in_struct = false;
        let mut renamed: Option<String> = None;
        for line in text.lines() {
            if line.starts_with("pub struct ") && line.contains("Config") {
                in_struct = true;
                continue;
            }
            if in_struct && line.starts_with('}') {
                in_struct = false;
            }
            if !in_struct {
                continue;
            }
            if let Some(c) = rename.captures(line) {
                renamed = Some(c[1].to_string());
            } else if let Some(c) = field.captures(line) {
                keys.insert(renamed.take().unwrap_or_else(|| c[1].to_string()));
            }
        }
    }
    keys
}

/// Keys the docs' TOML examples set (or show commented out), and section names.
fn doc_keys() -> BTreeSet<String> {
    let key = Regex::new(r"^\s*#?\s*([a-z][a-z0-9_]*)\s*=").unwrap();
    let section = Regex::new(r"^\[\[?([a-z_]+)\]\]?").unwrap();
    let mut keys = BTreeSet::new();
    for (_, text) in docs() {
        for block in text.split("```toml\n").skip(1) {
            for line in block.split("```").next().unwrap_or("").lines() {
                if let Some(c) = key.captures(line).or_else(|| section.captures(line)) {
                    keys.insert(c[1].to_string());
                }
            }
        }
    }
    keys
}

#[test]
fn every_configuration_key_is_documented_and_every_documented_key_exists() {
    let code = code_keys();
    let docs = doc_keys();
    assert!(
        code.len() > 60,
        "read {} keys: the reader is broken",
        code.len()
    );
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "keys with no TOML example in README.md or docs/: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "documented keys the code does not have: {unknown:?}"
    );
}

/// `--flag`s of every subcommand, from the clap definitions.
fn code_flags() -> BTreeSet<String> {
    fn walk(c: &clap::Command, out: &mut BTreeSet<String>) {
        for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(l) = a.get_long() {
                out.insert(format!("--{l}"));
            }
        }
        for s in c.get_subcommands() {
            walk(s, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&s3lun::cli::Cli::command(), &mut out);
    out
}

#[test]
fn every_flag_is_in_the_cli_reference_and_every_one_there_exists() {
    let code = code_flags();
    let page = read("docs/cli.md");
    let flag = Regex::new(r"--[a-z][a-z0-9-]*").unwrap();
    let documented: BTreeSet<String> = flag
        .find_iter(&page)
        .map(|m| m.as_str().to_string())
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    let missing: Vec<_> = code.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "flags not in docs/cli.md: {missing:?}");
    assert!(
        unknown.is_empty(),
        "docs/cli.md names flags the code does not have: {unknown:?}"
    );
    // Every subcommand has its section and its help text.
    for s in s3lun::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
    {
        assert!(
            page.contains(&format!("## s3lun {}", s.get_name())),
            "no section for s3lun {}",
            s.get_name()
        );
        assert!(
            s.get_about().is_some(),
            "s3lun {} has no help text",
            s.get_name()
        );
    }
}

/// A metric name without the suffixes its samples carry.
fn family(name: &str) -> String {
    let mut n = name.to_string();
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(b) = n.strip_suffix(suffix) {
            n = b.to_string();
        }
    }
    n
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    let name = Regex::new(r#""(s3lun_[a-z0-9_]+)""#).unwrap();
    let mut code = BTreeSet::new();
    for f in std::fs::read_dir(root().join("src/metrics"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(f.path()).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
        for c in name.captures_iter(&text) {
            code.insert(family(&c[1]));
        }
    }
    assert!(
        code.len() > 30,
        "read {} metrics: the reader is broken",
        code.len()
    );
    let mention = Regex::new(r"\bs3lun_[a-z][a-z0-9_]*").unwrap();
    let mut documented = BTreeSet::new();
    for (_, text) in docs() {
        for m in mention.find_iter(&text) {
            documented.insert(family(m.as_str().trim_end_matches('_')));
        }
    }
    let missing: Vec<_> = code.difference(&documented).collect();
    // Names the docs use for other things than metrics.
    let not_metrics = ["s3lun_proto"];
    let unknown: Vec<_> = documented
        .difference(&code)
        .filter(|d| !not_metrics.contains(&d.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not in README.md or docs/: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "documented metrics the code does not have: {unknown:?}"
    );
}

#[test]
fn every_command_and_argument_has_help_text() {
    fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = a.get_id().as_str();
            if id != "help" && id != "version" && a.get_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for s in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let p = format!("{path} {}", s.get_name());
            if s.get_about().is_none() {
                missing.push(p.clone());
            }
            walk(s, &p, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&s3lun::cli::Cli::command(), "s3lun", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:?}");
}
