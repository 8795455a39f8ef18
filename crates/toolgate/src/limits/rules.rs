//! The `limits:` rules compiled once per config: which calls a rule matches,
//! and the key of the budget a call spends.

use super::{Budget, Denied, Refused};
use crate::auth::Principal;
use crate::config::{Config, LimitDimension, LimitMatch, LimitRule};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// One call at the admit stage, as the rules see it.
pub struct Call<'a> {
    pub principal: &'a Principal,
    pub endpoint: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    /// The tool or prompt, by exposed name (none for resources).
    pub item: Option<&'a str>,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: Arc<str>,
    pub budget: Budget,
    /// `id#fingerprint`: the start of every key of this rule. The fingerprint
    /// covers the numbers and dimensions, so a changed rule starts with fresh
    /// budgets while an unchanged one keeps its own across a swap.
    prefix: String,
    per: Vec<LimitDimension>,
    matcher: Matcher,
}

/// The limits in force: rules in the order they are checked, and the
/// per-server sizes.
#[derive(Debug, Default)]
pub struct Snapshot {
    rules: Vec<Rule>,
    sizes: HashMap<String, Sizes>,
    /// GET streams a legacy session may hold open.
    pub max_session_streams: usize,
}

/// A server's size limits, in bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sizes {
    pub max_request: Option<usize>,
    pub max_result: Option<usize>,
}

impl Snapshot {
    pub fn compile(config: &Config) -> Snapshot {
        let mut rules: Vec<Rule> = config.limits.iter().map(Rule::compile).collect();
        // Concurrency first (its slot is given back on a later refusal), then
        // rates, then quotas: a call a rate refuses never spends a quota.
        rules.sort_by_key(|r| match r.budget {
            Budget::Concurrency { .. } => 0,
            Budget::Rate { .. } => 1,
            Budget::Quota { .. } => 2,
        });
        let sizes = config
            .servers
            .iter()
            .map(|(name, s)| {
                let sizes = Sizes {
                    max_request: s.max_request_bytes,
                    max_result: s.max_result_bytes,
                };
                (name.clone(), sizes)
            })
            .collect();
        Snapshot {
            rules,
            sizes,
            max_session_streams: config.max_session_streams,
        }
    }

    /// The rules that apply to `call`, in checking order.
    pub fn matching<'s>(&'s self, call: &'s Call<'_>) -> impl Iterator<Item = &'s Rule> {
        self.rules.iter().filter(|r| r.matcher.matches(call))
    }

    pub fn sizes(&self, server: &str) -> Sizes {
        self.sizes.get(server).copied().unwrap_or_default()
    }
}

impl Rule {
    fn compile(cfg: &LimitRule) -> Rule {
        let budget = match (cfg.rate, cfg.quota, cfg.concurrency) {
            (Some(r), _, _) => Budget::Rate {
                count: r.count,
                per: r.per,
                burst: cfg.burst.unwrap_or(r.count),
            },
            (None, Some(q), _) => Budget::Quota {
                count: q.count,
                window: q.window,
            },
            // Validation guarantees exactly one kind; a missing one limits to one.
            (None, None, c) => Budget::Concurrency {
                max: c.unwrap_or(1),
            },
        };
        Rule {
            id: cfg.id.as_str().into(),
            budget,
            prefix: format!("{}#{}", cfg.id, fingerprint(&budget, &cfg.per)),
            per: cfg.per.clone(),
            matcher: Matcher::compile(&cfg.matches),
        }
    }

    /// The key of the budget `call` spends: the prefix, then each dimension's
    /// value. Values are escaped so that no two calls with different values
    /// share a key (`|` and `=` cannot be forged from a user name).
    pub fn key(&self, call: &Call<'_>) -> String {
        let mut key = self.prefix.clone();
        for d in &self.per {
            let (name, value): (&str, &str) = match d {
                LimitDimension::Principal => {
                    let p = call.principal;
                    key.push_str("|principal=");
                    escape(&mut key, p.tenant.as_deref().unwrap_or(""));
                    key.push('/');
                    escape(&mut key, &p.user);
                    continue;
                }
                LimitDimension::User => ("user", &call.principal.user),
                LimitDimension::Agent => ("agent", call.principal.agent.as_deref().unwrap_or("")),
                LimitDimension::Tenant => {
                    ("tenant", call.principal.tenant.as_deref().unwrap_or(""))
                }
                LimitDimension::Endpoint => ("endpoint", call.endpoint),
                LimitDimension::Server => ("server", call.server),
                LimitDimension::Tool => ("tool", call.item.unwrap_or("")),
            };
            let _ = write!(key, "|{name}=");
            escape(&mut key, value);
        }
        key
    }

    /// The refusal a limiter's answer means for this rule.
    pub(super) fn refusal(&self, denied: Denied) -> Refused {
        let rule = self.id.clone();
        match (denied, self.budget) {
            (Denied::Unavailable(reason), _) => Refused::Unavailable { rule, reason },
            (Denied::Exceeded { .. }, Budget::Concurrency { .. }) => {
                Refused::ConcurrencyLimited { rule }
            }
            (Denied::Exceeded { retry_after }, Budget::Quota { .. }) => {
                Refused::QuotaExceeded { rule, retry_after }
            }
            (Denied::Exceeded { retry_after }, Budget::Rate { .. }) => {
                Refused::RateLimited { rule, retry_after }
            }
        }
    }
}

/// What makes two versions of a rule keep the same budgets: its numbers and
/// dimensions, spelled out (not `Debug`, not a std hasher: the fingerprint
/// must stay the same across builds, for budgets a shared store keeps).
fn fingerprint(budget: &Budget, per: &[LimitDimension]) -> String {
    use sha2::Digest as _;
    let mut text = match budget {
        Budget::Rate { count, per, burst } => {
            format!("rate {count} per {}ns burst {burst}", per.as_nanos())
        }
        Budget::Quota { count, window } => format!("quota {count} per {}s", window.as_secs()),
        Budget::Concurrency { max } => format!("concurrency {max}"),
    };
    for d in per {
        text.push(' ');
        text.push_str(dimension_name(*d));
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    crate::seal::hex(&digest[..4])
}

fn dimension_name(d: LimitDimension) -> &'static str {
    match d {
        LimitDimension::Principal => "principal",
        LimitDimension::User => "user",
        LimitDimension::Agent => "agent",
        LimitDimension::Tenant => "tenant",
        LimitDimension::Endpoint => "endpoint",
        LimitDimension::Server => "server",
        LimitDimension::Tool => "tool",
    }
}

fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// A rule's conditions, compiled.
#[derive(Debug, Default)]
struct Matcher {
    servers: Option<Vec<Glob>>,
    tools: Option<Vec<Glob>>,
    prompts: Option<Vec<Glob>>,
    methods: Option<Vec<String>>,
    tenants: Option<Vec<Glob>>,
    agents: Option<Vec<Glob>>,
    users: Option<Vec<Glob>>,
    groups: Option<Vec<Glob>>,
    endpoints: Option<Vec<Glob>>,
}

impl Matcher {
    fn compile(m: &LimitMatch) -> Matcher {
        let globs = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| v.iter().map(|p| Glob::new(p)).collect::<Vec<_>>())
        };
        Matcher {
            servers: globs(&m.servers),
            tools: globs(&m.tools),
            prompts: globs(&m.prompts),
            methods: m.methods.clone(),
            tenants: globs(&m.tenants),
            agents: globs(&m.agents),
            users: globs(&m.users),
            groups: globs(&m.groups),
            endpoints: globs(&m.endpoints),
        }
    }

    fn matches(&self, call: &Call<'_>) -> bool {
        // A condition on a value the call does not have (a tenant, an agent, a
        // tool name) does not hold.
        fn any(globs: &Option<Vec<Glob>>, value: Option<&str>) -> bool {
            match globs {
                None => true,
                Some(g) => value.is_some_and(|v| g.iter().any(|g| g.matches(v))),
            }
        }
        let p = call.principal;
        let tool = (call.method == "tools/call").then_some(call.item).flatten();
        let prompt = matches!(call.method, "prompts/get" | "completion/complete")
            .then_some(call.item)
            .flatten();
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == call.method))
            && any(&self.servers, Some(call.server))
            && any(&self.tools, tool)
            && any(&self.prompts, prompt)
            && any(&self.tenants, p.tenant.as_deref())
            && any(&self.agents, p.agent.as_deref())
            && any(&self.users, Some(&p.user))
            && any(&self.endpoints, Some(call.endpoint))
            && self.groups.as_ref().is_none_or(|g| {
                p.groups
                    .iter()
                    .any(|group| g.iter().any(|g| g.matches(group)))
            })
    }
}

/// A pattern where `*` matches any run of characters (and nothing else is
/// special): linear-time matching, no regex.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            anchored_start: !pattern.starts_with('*'),
            anchored_end: !pattern.ends_with('*'),
        }
    }

    fn matches(&self, text: &str) -> bool {
        let n = self.parts.len();
        if n == 0 {
            // `*` (or `**`) matches everything; the empty pattern only "".
            return !(self.anchored_start && self.anchored_end) || text.is_empty();
        }
        let mut rest = text;
        for (i, part) in self.parts.iter().enumerate() {
            let first = i == 0;
            let last = i == n - 1;
            if first && self.anchored_start {
                let Some(r) = rest.strip_prefix(part.as_str()) else {
                    return false;
                };
                rest = r;
                if last && self.anchored_end {
                    return rest.is_empty();
                }
            } else if last && self.anchored_end {
                return rest.ends_with(part.as_str());
            } else {
                // Leftmost match is enough for `*` globs.
                let Some(at) = rest.find(part.as_str()) else {
                    return false;
                };
                rest = &rest[at + part.len()..];
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn principal(
        user: &str,
        tenant: Option<&str>,
        agent: Option<&str>,
        groups: &[&str],
    ) -> Principal {
        let mut p = Principal::anonymous(user);
        p.tenant = tenant.map(str::to_owned);
        p.agent = agent.map(str::to_owned);
        p.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        p
    }

    fn call<'a>(p: &'a Principal, method: &'a str, item: Option<&'a str>) -> Call<'a> {
        Call {
            principal: p,
            endpoint: "/mcp",
            server: "payments",
            method,
            item,
        }
    }

    fn snapshot(yaml: &str) -> Snapshot {
        let text =
            format!("servers:\n  payments: {{ command: x }}\n  files: {{ command: x }}\n{yaml}");
        Snapshot::compile(&load_str(&text, "t.yaml", false).unwrap())
    }

    fn ids(s: &Snapshot, c: &Call<'_>) -> Vec<String> {
        s.matching(c).map(|r| r.id.to_string()).collect()
    }

    #[test]
    fn globs() {
        let g = Glob::new("payments__*");
        assert!(g.matches("payments__refund") && g.matches("payments__"));
        assert!(!g.matches("files__read"));
        assert!(Glob::new("*").matches("anything") && Glob::new("*").matches(""));
        let g = Glob::new("*__refund");
        assert!(g.matches("payments__refund") && !g.matches("payments__refunds"));
        let g = Glob::new("a*b*c");
        assert!(g.matches("abc") && g.matches("axxbyyc") && !g.matches("axxbyy"));
        assert!(!Glob::new("ab*ba").matches("aba"), "parts must not overlap");
        assert!(Glob::new("exact").matches("exact") && !Glob::new("exact").matches("exactly"));
    }

    #[test]
    fn rules_match_on_every_condition_they_set() {
        let s = snapshot(
            r#"
limits:
  - id: finance-refunds
    match: { groups: [finance], tools: ["payments__refund"] }
    per: [agent]
    rate: 10/s
  - id: tenant-daily
    match: { servers: [payments] }
    per: [tenant]
    quota: 1000/day
  - id: one-at-a-time
    match: { tenants: ["acme*"], methods: [tools/call] }
    concurrency: 1
  - id: prompts
    match: { prompts: ["payments__*"] }
    rate: 1/s
"#,
        );
        let fin = principal("ann", Some("acme-eu"), Some("bot"), &["finance"]);
        let other = principal("bob", None, None, &["ops"]);
        let refund = call(&fin, "tools/call", Some("payments__refund"));
        assert_eq!(
            ids(&s, &refund),
            ["one-at-a-time", "finance-refunds", "tenant-daily"],
            "concurrency, then rates, then quotas"
        );
        assert_eq!(
            ids(&s, &call(&other, "tools/call", Some("payments__refund"))),
            ["tenant-daily"]
        );
        // A tool condition never matches a prompt of the same name, and back.
        assert_eq!(
            ids(&s, &call(&other, "prompts/get", Some("payments__refund"))),
            ["prompts", "tenant-daily"]
        );
        assert_eq!(
            ids(&s, &call(&other, "resources/read", None)),
            ["tenant-daily"]
        );
    }

    #[test]
    fn keys_separate_exactly_the_dimensions_named() {
        let s = snapshot(
            r#"
limits:
  - id: per-caller-tool
    per: [principal, tool]
    rate: 5/s
  - id: global
    rate: 5/s
"#,
        );
        let a = principal("ann", Some("t1"), None, &[]);
        let b = principal("ann", Some("t2"), None, &[]);
        let keys = |p: &Principal, tool: &str| -> Vec<String> {
            let c = call(p, "tools/call", Some(tool));
            s.matching(&c).map(|r| r.key(&c)).collect()
        };
        let (a1, a2, b1) = (keys(&a, "x"), keys(&a, "y"), keys(&b, "x"));
        assert_ne!(a1[0], a2[0]);
        assert_ne!(a1[0], b1[0], "the same user in another tenant");
        assert_eq!(a1[1], b1[1], "one global budget");
        assert!(
            a1[0].starts_with("per-caller-tool#") && a1[0].ends_with("|principal=t1/ann|tool=x")
        );
        // Separators in values cannot forge another caller's key.
        let forged = principal("t1/ann", None, None, &[]);
        assert_ne!(keys(&forged, "x")[0], a1[0]);
    }

    #[test]
    fn a_changed_rule_gets_fresh_budgets_and_an_unchanged_one_keeps_them() {
        let before = snapshot("limits:\n  - { id: r, rate: 5/s }\n  - { id: q, quota: 10/h }\n");
        let after = snapshot("limits:\n  - { id: r, rate: 6/s }\n  - { id: q, quota: 10/h }\n");
        let p = principal("ann", None, None, &[]);
        let c = call(&p, "tools/call", Some("x"));
        let keys = |s: &Snapshot| s.matching(&c).map(|r| r.key(&c)).collect::<Vec<_>>();
        let (k1, k2) = (keys(&before), keys(&after));
        assert_ne!(k1[0], k2[0]);
        assert_eq!(k1[1], k2[1]);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_key() {
        let bad = [
            ("limits:\n  - { id: a }\n", "limits[0]", "exactly one"),
            (
                "limits:\n  - { id: a, rate: 1/s, quota: 1/h }\n",
                "limits[0]",
                "exactly one",
            ),
            (
                "limits:\n  - { id: a, rate: 1/s }\n  - { id: a, rate: 2/s }\n",
                "limits[1].id",
                "earlier",
            ),
            (
                "limits:\n  - { id: 'a b', rate: 1/s }\n",
                "limits[0].id",
                "1-64",
            ),
            (
                "limits:\n  - { id: a, quota: 5/h, burst: 2 }\n",
                "limits[0].burst",
                "rate",
            ),
            (
                "limits:\n  - { id: a, concurrency: 0 }\n",
                "limits[0].concurrency",
                "at least 1",
            ),
            (
                "limits:\n  - { id: a, rate: 1/s, match: { servers: [nope] } }\n",
                "limits[0].match.servers",
                "unknown server",
            ),
            (
                "limits:\n  - { id: a, rate: 1/s, match: { methods: [tools/list] } }\n",
                "limits[0].match.methods",
                "not limited",
            ),
            (
                "limits:\n  - { id: a, rate: 10/week }\n",
                "limits[0].rate",
                "unit",
            ),
            (
                "limits:\n  - { id: a, rate: 1/s, per: [tenant, tenant] }\n",
                "limits[0].per",
                "twice",
            ),
        ];
        for (yaml, key, message) in bad {
            let text = format!("servers:\n  payments: {{ command: x }}\n{yaml}");
            let e = load_str(&text, "t.yaml", false).expect_err(yaml);
            assert_eq!(e.key.as_deref(), Some(key), "{yaml}: {e}");
            assert!(e.message.contains(message), "{yaml}: {e}");
            assert!(e.line.is_some(), "{yaml}: {e}");
        }
    }
}
