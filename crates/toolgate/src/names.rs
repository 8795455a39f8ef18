//! Exposed names of tools and prompts: prefixing, sanitising, shortening, and
//! making every name unique across servers.
//!
//! The rule enforced is the strictest one in use by clients: 1–64 characters of
//! `[A-Za-z0-9_.-]`. Longer names are cut and given a hash suffix of the full
//! name, so the result is deterministic and two long names never collide.

use crate::config::PrefixMode;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

pub const MAX_NAME: usize = 64;

pub fn valid_exposed_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(allowed)
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    crate::seal::hex(&digest[..4])
}

/// Make `raw` a valid exposed name: replace disallowed characters, then shorten.
pub fn normalise(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    let clean = if clean.is_empty() {
        "_".to_owned()
    } else {
        clean
    };
    if clean.len() <= MAX_NAME && clean == raw {
        return clean;
    }
    if clean.len() <= MAX_NAME {
        // Characters were replaced: two raw names could now be equal, so the hash of
        // the raw name keeps them apart only when they are shortened; uniqueness
        // across the catalog is enforced by `assign`.
        return clean;
    }
    let suffix = short_hash(raw);
    let keep = MAX_NAME - suffix.len() - 1;
    let mut cut = keep;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{suffix}", &clean[..cut])
}

/// One item to be named: which server owns it and what the server calls it.
pub struct Candidate<'a> {
    pub prefix: &'a str,
    pub original: &'a str,
    /// An exposed name fixed by config (`rename`); used as is.
    pub rename: Option<&'a str>,
}

/// Assign a unique exposed name to every candidate, in order. Earlier candidates
/// (servers listed earlier in the config) win a clash; later ones are prefixed, then
/// disambiguated with a hash. The same input always yields the same names.
pub fn assign(candidates: &[Candidate<'_>], mode: PrefixMode, sep: &str) -> Vec<String> {
    let prefixed = |c: &Candidate<'_>| normalise(&format!("{}{sep}{}", c.prefix, c.original));
    let mut shared: HashMap<&str, usize> = HashMap::new();
    if mode == PrefixMode::Conditional {
        let mut seen: HashMap<&str, HashSet<&str>> = HashMap::new();
        for c in candidates {
            seen.entry(c.original).or_default().insert(c.prefix);
        }
        for (name, prefixes) in seen {
            shared.insert(name, prefixes.len());
        }
    }
    let mut taken: HashSet<String> = HashSet::with_capacity(candidates.len());
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let first = match (c.rename, mode) {
            (Some(r), _) => normalise(r),
            (None, PrefixMode::Always) => prefixed(c),
            (None, PrefixMode::Conditional) if shared.get(c.original).copied() > Some(1) => {
                prefixed(c)
            }
            (None, _) => normalise(c.original),
        };
        let mut name = first.clone();
        if taken.contains(&name) {
            name = prefixed(c);
        }
        let mut n = 0u32;
        while taken.contains(&name) {
            n += 1;
            let suffix = short_hash(&format!("{}{sep}{}#{n}", c.prefix, c.original));
            let base = prefixed(c);
            let keep = (MAX_NAME - suffix.len() - 1).min(base.len());
            name = format!("{}_{suffix}", &base[..keep]);
        }
        taken.insert(name.clone());
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(prefix: &'a str, original: &'a str) -> Candidate<'a> {
        Candidate {
            prefix,
            original,
            rename: None,
        }
    }

    #[test]
    fn always_prefixes() {
        let names = assign(
            &[c("files", "read"), c("web", "read")],
            PrefixMode::Always,
            "__",
        );
        assert_eq!(names, ["files__read", "web__read"]);
    }

    #[test]
    fn conditional_prefixes_only_shared_names() {
        let names = assign(
            &[c("a", "read"), c("a", "write"), c("b", "read")],
            PrefixMode::Conditional,
            "__",
        );
        assert_eq!(names, ["a__read", "write", "b__read"]);
    }

    #[test]
    fn never_resolves_clashes_on_the_later_server() {
        let names = assign(&[c("a", "read"), c("b", "read")], PrefixMode::Never, "__");
        assert_eq!(names, ["read", "b__read"]);
    }

    #[test]
    fn long_and_odd_names_are_valid_and_distinct() {
        let long_a = "x".repeat(100) + "a";
        let long_b = "x".repeat(100) + "b";
        let names = assign(
            &[c("s", &long_a), c("s", &long_b), c("s", "has space/slash")],
            PrefixMode::Always,
            "__",
        );
        for n in &names {
            assert!(valid_exposed_name(n), "{n}");
        }
        assert_ne!(names[0], names[1]);
        assert_eq!(names[2], "s__has_space_slash");
    }

    #[test]
    fn collisions_are_impossible() {
        // A rename that lands on another item's name, and sanitising that merges two names.
        let cands = [
            c("a", "x"),
            Candidate {
                prefix: "a",
                original: "y",
                rename: Some("a__x"),
            },
            c("a", "p q"),
            c("a", "p_q"),
        ];
        let names = assign(&cands, PrefixMode::Always, "__");
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.iter().all(|n| valid_exposed_name(n)));
        // Deterministic.
        assert_eq!(names, assign(&cands, PrefixMode::Always, "__"));
    }
}
