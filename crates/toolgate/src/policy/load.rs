//! Reading a policy file or directory: parsing, naming every policy, and strict
//! validation against the schema, with every problem located by file, line and
//! column.

use super::schema::{self, Effective};
use super::{PolicyError, Problem};
use cedar_policy::{Policy, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// toolgate's own policy, always loaded: listing a server is permitted, since a
/// list only ever shows the items the principal could use anyway. `forbid` a
/// `discover` action to hide a server.
pub(crate) const BUILTIN_ID: &str = "toolgate:discover";
const BUILTIN: &str = r#"permit (principal, action in Toolgate::Action::"discover", resource);"#;

/// Where a policy came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// Everything read from disk, parsed and validated.
pub(crate) struct Loaded {
    pub set: PolicySet,
    pub origins: HashMap<PolicyId, Origin>,
    pub schema: Effective,
    pub warnings: Vec<String>,
    /// A digest of every file read, to tell a reload that changed nothing.
    pub digest: [u8; 32],
}

/// Read a `.cedar` file, or every `*.cedar` (policies) and `*.cedarschema`
/// (declarations of `Args`/`Attrs`) in a directory, in name order. Hidden
/// entries are skipped: Kubernetes mounts a ConfigMap as symlinks into a
/// `..data` directory that it swaps on update.
pub(crate) fn load(path: &Path) -> Result<Loaded, PolicyError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let meta = std::fs::metadata(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut policy_files = Vec::new();
    let mut declarations = Vec::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        paths.sort();
        for p in paths {
            match p.extension().and_then(|e| e.to_str()) {
                Some("cedar") => policy_files.push((p.clone(), read(&p)?)),
                Some("cedarschema") => declarations.push((p.clone(), read(&p)?)),
                _ => {}
            }
        }
    } else {
        policy_files.push((path.to_owned(), read(path)?));
    }
    compile(&policy_files, &declarations)
}

/// Parse, name and validate policies given as (file, text).
pub(crate) fn compile(
    policy_files: &[(PathBuf, String)],
    declarations: &[(PathBuf, String)],
) -> Result<Loaded, PolicyError> {
    let mut hasher = Sha256::new();
    for (p, text) in declarations.iter().chain(policy_files) {
        hasher.update(p.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    let schema = schema::build(declarations)?;

    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    let mut origins: HashMap<PolicyId, Origin> = HashMap::new();
    let mut texts: HashMap<PolicyId, (&Path, &str)> = HashMap::new();
    for (path, text) in policy_files {
        let parsed = match text.parse::<PolicySet>() {
            Ok(s) => s,
            Err(errors) => {
                problems.extend(errors.iter().map(|e| located(path, text, e, None)));
                continue;
            }
        };
        if let Some(t) = parsed.templates().next() {
            problems.push(located_text(
                path,
                text,
                &t.to_string(),
                "templates (policies with `?principal` or `?resource`) are not supported: write the entity out".into(),
            ));
            continue;
        }
        // Cedar names a file's policies policy0, policy1, … in file order.
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            AsRef::<str>::as_ref(p.id())
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        let file_name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut search_from = 0;
        for (n, policy) in policies.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{file_name}#{}", n + 1),
            };
            let own_text = policy.to_cedar().unwrap_or_default();
            let offset = text[search_from..]
                .find(own_text.as_str())
                .map_or(search_from, |i| search_from + i);
            search_from = offset + own_text.len().min(text.len() - offset);
            let line = line_col(text, offset).0;
            let pid = PolicyId::new(&id);
            if id == BUILTIN_ID {
                problems.push(Problem::at(
                    path,
                    line,
                    1,
                    format!("the id `{BUILTIN_ID}` is toolgate's own"),
                ));
                continue;
            }
            if let Some(other) = origins.get(&pid) {
                problems.push(Problem::at(
                    path,
                    line,
                    1,
                    format!(
                        "policy id `{id}` is used twice (also at {}:{})",
                        other.file.display(),
                        other.line
                    ),
                ));
                continue;
            }
            if let Err(e) = set.add(policy.new_id(pid.clone())) {
                problems.push(Problem::at(path, line, 1, e.to_string()));
                continue;
            }
            origins.insert(
                pid.clone(),
                Origin {
                    file: path.clone(),
                    line,
                },
            );
            texts.insert(pid, (path.as_path(), text.as_str()));
        }
    }
    let builtin = Policy::parse(Some(PolicyId::new(BUILTIN_ID)), BUILTIN)
        .unwrap_or_else(|e| unreachable!("the built-in policy parses: {e}"));
    if let Err(e) = set.add(builtin) {
        problems.push(Problem::in_file(Path::new(BUILTIN_ID), e.to_string()));
    }
    // Validate what did parse, so that one run reports every problem.
    let validator = Validator::new(schema.schema.clone());
    // Cedar reports one error per resource type a policy may apply to; the
    // first at each place is enough.
    let mut seen = std::collections::HashSet::new();
    let result = validator.validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let id = e.policy_id();
        let Some((path, text)) = texts.get(id) else {
            problems.push(Problem::in_file(Path::new(BUILTIN_ID), chain(e)));
            continue;
        };
        let mut p = located(path, text, e, Some(AsRef::<str>::as_ref(id)));
        if !seen.insert((p.policy.clone(), p.line, p.column)) {
            continue;
        }
        if p.message.contains("not found") && p.message.contains("args") {
            p.message.push_str(
                "; declare the arguments policies read in a `.cedarschema` file beside them: `namespace Toolgate { type Args = { \"amount\"?: Long }; }` (docs/policy.md)",
            );
        } else if p.message.contains("not found") && p.message.contains("attrs") {
            p.message.push_str(
                "; declare the principal attributes policies read in a `.cedarschema` file beside them: `namespace Toolgate { type Attrs = { \"dept\"?: String }; }` (docs/policy.md)",
            );
        }
        problems.push(p);
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid { problems });
    }
    let warnings = result
        .validation_warnings()
        .map(|w| {
            let id = w.policy_id();
            match texts.get(id) {
                Some((path, text)) => {
                    located(path, text, w, Some(AsRef::<str>::as_ref(id))).to_string()
                }
                None => chain(w),
            }
        })
        .collect();
    Ok(Loaded {
        set,
        origins,
        schema,
        warnings,
        digest: hasher.finalize().into(),
    })
}

/// A diagnostic located in `text` (the content of `path`) by its first label.
pub(crate) fn located(
    path: &Path,
    text: &str,
    diag: &dyn Diagnostic,
    policy: Option<&str>,
) -> Problem {
    let offset = diag
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let (line, column) = offset.map_or((None, None), |o| {
        let (l, c) = line_col(text, o);
        (Some(l), Some(c))
    });
    let mut message = diag.to_string();
    // Cedar prefixes validation errors with "for policy `policy0`, …": the id is
    // reported separately, and Cedar's id is not the one users know.
    if let Some(rest) = message.strip_prefix("for policy `")
        && let Some((_, after)) = rest.split_once("`, ")
    {
        message = after.to_owned();
    }
    if let Some(help) = diag.help() {
        message.push_str(&format!(" ({help})"));
    }
    Problem {
        file: path.to_owned(),
        line,
        column,
        policy: policy.map(str::to_owned),
        message,
    }
}

fn located_text(path: &Path, text: &str, needle: &str, message: String) -> Problem {
    let offset = text.find(needle.trim()).unwrap_or(0);
    let (line, column) = line_col(text, offset);
    Problem::at(path, line, column, message)
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
