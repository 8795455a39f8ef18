//! Decisions as a gateway would ask for them.

use super::*;
use crate::config::Labels;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

const ARGS: &str = r#"namespace Toolgate {
  type Args = { "amount"?: Long, "currency"?: String, "limit"?: Long, "path"?: String };
  type Attrs = { "dept"?: String };
}"#;

/// Policies from text with the test's argument declarations.
fn policies(text: &str) -> Policies {
    match load::compile(
        &[(PathBuf::from("test.cedar"), text.to_owned())],
        &[(PathBuf::from("args.cedarschema"), ARGS.to_owned())],
    ) {
        Ok(l) => Policies::from_loaded(l),
        Err(e) => panic!("policies do not load:\n{e}"),
    }
}

fn user(name: &str, groups: &[&str]) -> Principal {
    let mut p = Principal::anonymous(name);
    p.method = crate::auth::AuthMethod::Jwt;
    p.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    p
}

fn labels(risk: Option<&str>, environment: Option<&str>) -> Labels {
    Labels {
        risk: risk.map(str::to_owned),
        environment: environment.map(str::to_owned),
        ..Labels::default()
    }
}

fn tool(server: &str, name: &str) -> Target {
    let l = Labels::default();
    Target::tool(
        ServerRef {
            name: server,
            labels: &l,
        },
        &format!("{server}__{name}"),
        name,
        None,
        None,
    )
}

fn ctx(args: Option<&Value>) -> CallContext<'_> {
    CallContext {
        args,
        source: None,
        endpoint: "/mcp",
        session: None,
        era: Era::Modern,
        // Monday 2026-11-23 10:30:05 UTC.
        time: UNIX_EPOCH + Duration::from_secs(1_795_429_805),
    }
}

fn decide(
    p: &Policies,
    who: &Principal,
    action: Action,
    target: &Target,
    args: Option<&Value>,
) -> Decision {
    p.decide(&Request {
        principal: who,
        action,
        target,
        context: ctx(args),
    })
}

fn listed(p: &Policies, who: &Principal, target: &Target) -> bool {
    p.could_allow(&Request {
        principal: who,
        action: Action::CallTool,
        target,
        context: ctx(None),
    })
}

const PAYMENTS: &str = r#"
@id("finance-payments")
permit (principal in Toolgate::Group::"finance", action == Toolgate::Action::"call_tool", resource in Toolgate::Server::"payments");

@id("refund-limit")
forbid (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"payments/refund")
when { context.args has amount && context.args.amount >= 1000 };
"#;

#[test]
fn default_deny() {
    let p = policies("");
    let d = decide(
        &p,
        &user("alice", &[]),
        Action::CallTool,
        &tool("payments", "refund"),
        None,
    );
    assert!(!d.allowed);
    assert_eq!(d.reason.code, code::NO_PERMIT);
    assert!(d.reason.policies.is_empty());
}

#[test]
fn role_based_permit_and_argument_limit() {
    let p = policies(PAYMENTS);
    let refund = tool("payments", "refund");
    let alice = user("alice", &["finance"]);
    let small = json!({"amount": 50});
    let d = decide(&p, &alice, Action::CallTool, &refund, Some(&small));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.reason.code, code::ALLOWED);
    assert_eq!(d.reason.policies, ["finance-payments"]);

    let big = json!({"amount": 5000});
    let d = decide(&p, &alice, Action::CallTool, &refund, Some(&big));
    assert!(!d.allowed);
    assert_eq!(d.reason.code, code::FORBIDDEN);
    assert_eq!(d.reason.policies, ["refund-limit"]);

    // Not in the group: no permit.
    let bob = user("bob", &["eng"]);
    let d = decide(&p, &bob, Action::CallTool, &refund, Some(&small));
    assert_eq!(d.reason.code, code::NO_PERMIT);
}

#[test]
fn a_forbid_cannot_be_bypassed_by_a_value_of_another_type() {
    let p = policies(PAYMENTS);
    let refund = tool("payments", "refund");
    let alice = user("alice", &["finance"]);
    // Cedar skips a policy that errors; for a forbid that would allow exactly
    // the call it was written against.
    for args in [
        json!({"amount": "5000"}),
        json!({"amount": [5000]}),
        json!({"amount": {"value": 5000}}),
        json!({"amount": null}),
        json!({"amount": 5000.5}),
        json!({"amount": 1e300}),
    ] {
        let d = decide(&p, &alice, Action::CallTool, &refund, Some(&args));
        assert!(!d.allowed, "{args} was allowed: {d:?}");
        assert_eq!(d.reason.code, code::POLICY_ERROR, "{args}: {d:?}");
        assert_eq!(d.reason.policies, ["refund-limit"]);
    }
    // A float that is an integer is that integer.
    let d = decide(
        &p,
        &alice,
        Action::CallTool,
        &refund,
        Some(&json!({"amount": 5000.0})),
    );
    assert_eq!(d.reason.code, code::FORBIDDEN);
    // The same odd value on a tool no policy reads it for does not matter.
    let d = decide(
        &p,
        &alice,
        Action::CallTool,
        &tool("payments", "status"),
        Some(&json!({"amount": "5000"})),
    );
    assert!(d.allowed, "{d:?}");
}

#[test]
fn an_equality_forbid_cannot_be_bypassed_by_a_value_of_another_type() {
    // `==` between different types is simply false in Cedar, not an error: without
    // the declared types, `["/etc/passwd"]` would slip past this forbid.
    let p = policies(
        r#"
        @id("files") permit (principal, action == Toolgate::Action::"call_tool", resource in Toolgate::Server::"files");
        @id("no-passwd") forbid (principal, action == Toolgate::Action::"call_tool", resource in Toolgate::Server::"files")
        when { context.args has path && context.args.path == "/etc/passwd" };
        @id("dept") forbid (principal, action == Toolgate::Action::"call_tool", resource in Toolgate::Server::"files")
        when { principal.attrs has dept && principal.attrs.dept == "contractors" };
        "#,
    );
    let read = tool("files", "read");
    let alice = user("alice", &[]);
    for args in [
        json!({"path": ["/etc/passwd"]}),
        json!({"path": 5}),
        json!({"path": {"p": "/etc/passwd"}}),
        json!({"path": true}),
    ] {
        let d = decide(&p, &alice, Action::CallTool, &read, Some(&args));
        assert!(!d.allowed, "{args} was allowed: {d:?}");
        assert_eq!(d.reason.code, code::POLICY_ERROR, "{args}: {d:?}");
        assert!(d.reason.message.contains("args.path"), "{d:?}");
    }
    let d = decide(
        &p,
        &alice,
        Action::CallTool,
        &read,
        Some(&json!({"path": "/tmp/x"})),
    );
    assert!(d.allowed, "{d:?}");
    // The same for a principal attribute a claim filled with another type.
    let mut odd = user("mallory", &[]);
    odd.attrs.insert("dept".into(), json!(["contractors"]));
    let d = decide(
        &p,
        &odd,
        Action::CallTool,
        &read,
        Some(&json!({"path": "/tmp/x"})),
    );
    assert!(!d.allowed, "{d:?}");
}

#[test]
fn a_permit_that_fails_denies_with_policy_error() {
    let p = policies(
        r#"@id("small") permit (principal, action == Toolgate::Action::"call_tool", resource)
           when { context.args has limit && context.args.limit < 10 };"#,
    );
    let alice = user("alice", &[]);
    let t = tool("db", "query");
    let d = decide(&p, &alice, Action::CallTool, &t, Some(&json!({"limit": 5})));
    assert!(d.allowed);
    let d = decide(&p, &alice, Action::CallTool, &t, Some(&json!({})));
    assert_eq!(d.reason.code, code::NO_PERMIT);
    // Another type than declared: the permit cannot be evaluated.
    let d = decide(
        &p,
        &alice,
        Action::CallTool,
        &t,
        Some(&json!({"limit": "5"})),
    );
    assert_eq!(d.reason.code, code::POLICY_ERROR);
    assert_eq!(d.reason.policies, ["small"]);
    let d = decide(
        &p,
        &alice,
        Action::CallTool,
        &t,
        Some(&json!({"limit": null})),
    );
    assert_eq!(d.reason.code, code::POLICY_ERROR);
    assert!(
        d.reason.message.contains("args.limit: null"),
        "{}",
        d.reason.message
    );
}

#[test]
fn discovery_lists_what_some_arguments_allow() {
    let p = policies(
        r#"
        @id("small-refunds") permit (principal in Toolgate::Group::"support", action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"payments/refund")
        when { context.args has amount && context.args.amount < 100 };
        @id("no-deletes") forbid (principal, action, resource == Toolgate::Tool::"payments/delete");
        @id("support-all") permit (principal in Toolgate::Group::"support", action, resource in Toolgate::Server::"payments")
        unless { resource == Toolgate::Tool::"payments/refund" };
        @id("no-big-exports") forbid (principal, action, resource == Toolgate::Tool::"payments/export")
        when { context.args has limit && context.args.limit > 1000 };
        "#,
    );
    let support = user("sam", &["support"]);
    let other = user("olga", &["sales"]);
    // Permit with an argument condition: listed, though not every call passes.
    assert!(listed(&p, &support, &tool("payments", "refund")));
    // Unconditional forbid: hidden.
    assert!(!listed(&p, &support, &tool("payments", "delete")));
    // Forbid with an argument condition: some calls pass, so listed.
    assert!(listed(&p, &support, &tool("payments", "export")));
    // No permit at all: hidden.
    assert!(!listed(&p, &other, &tool("payments", "refund")));
    assert!(!listed(&p, &other, &tool("payments", "status")));
    assert!(listed(&p, &support, &tool("payments", "status")));
}

#[test]
fn listing_a_server_is_permitted_unless_forbidden() {
    let p = policies(
        r#"@id("hide-admin") forbid (principal, action in Toolgate::Action::"discover", resource == Toolgate::Server::"admin")
           unless { principal in Toolgate::Group::"ops" };"#,
    );
    let l = Labels::default();
    let admin = Target::server(ServerRef {
        name: "admin",
        labels: &l,
    });
    let web = Target::server(ServerRef {
        name: "web",
        labels: &l,
    });
    let anyone = user("a", &[]);
    let d = decide(&p, &anyone, Action::ListTools, &web, None);
    assert!(d.allowed);
    assert_eq!(d.reason.policies, ["toolgate:discover"]);
    let d = decide(&p, &anyone, Action::ListTools, &admin, None);
    assert_eq!(d.reason.code, code::FORBIDDEN);
    assert!(decide(&p, &user("o", &["ops"]), Action::ListPrompts, &admin, None).allowed);
}

#[test]
fn labels_environment_and_risk() {
    let p = policies(
        r#"
        @id("use-non-prod") permit (principal, action in Toolgate::Action::"use", resource)
        when { resource has environment && resource.environment != "production" };
        @id("high-risk-needs-admins") forbid (principal, action, resource)
        when { resource has risk && resource.risk == "high" } unless { principal in Toolgate::Group::"admins" };
        @id("destructive-prod") forbid (principal, action == Toolgate::Action::"call_tool", resource is Toolgate::Tool)
        when { resource.untrusted_annotations.destructiveHint && resource.server has environment && resource.server.environment == "production" };
        "#,
    );
    let staging = labels(None, Some("staging"));
    let high = labels(Some("high"), None);
    let s = ServerRef {
        name: "db",
        labels: &staging,
    };
    let read = Target::tool(
        s,
        "db__read",
        "read",
        None,
        Some(&json!({"readOnlyHint": true, "destructiveHint": false})),
    );
    let drop = Target::tool(
        s,
        "db__drop",
        "drop",
        Some(&high),
        Some(&json!({"destructiveHint": true})),
    );
    let dev = user("dev", &[]);
    assert!(decide(&p, &dev, Action::CallTool, &read, None).allowed);
    // The tool's own label wins over the server's; its environment is inherited.
    let d = decide(&p, &dev, Action::CallTool, &drop, None);
    assert_eq!(d.reason.policies, ["high-risk-needs-admins"]);
    assert!(
        decide(
            &p,
            &user("root", &["admins"]),
            Action::CallTool,
            &drop,
            None
        )
        .allowed
    );
    let prod = labels(None, Some("production"));
    let unannotated = Target::tool(
        ServerRef {
            name: "db",
            labels: &prod,
        },
        "x",
        "x",
        None,
        None,
    );
    // Missing annotations take the worst-case defaults.
    let d = decide(
        &p,
        &user("root", &["admins"]),
        Action::CallTool,
        &unannotated,
        None,
    );
    assert_eq!(d.reason.policies, ["destructive-prod"]);
}

#[test]
fn tenants_are_kept_apart() {
    let p = policies(
        r#"
        @id("acme-admins") permit (principal in Toolgate::Group::"acme/admins", action, resource in Toolgate::Server::"crm");
        @id("own-tenant-only") forbid (principal, action, resource in Toolgate::Server::"crm")
        unless { principal in Toolgate::Tenant::"acme" };
        @id("finance-attr") permit (principal, action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"ledger/read")
        when { principal.attrs has dept && principal.attrs.dept == "finance" };
        "#,
    );
    let mut acme = user("alice", &["admins"]);
    acme.tenant = Some("acme".into());
    let mut other = user("alice", &["admins"]);
    other.tenant = Some("globex".into());
    let t = tool("crm", "export");
    assert!(decide(&p, &acme, Action::CallTool, &t, None).allowed);
    // Same user name and group name in another tenant: not the same principal.
    let d = decide(&p, &other, Action::CallTool, &t, None);
    assert!(!d.allowed);
    assert_eq!(d.reason.policies, ["own-tenant-only"]);

    let mut fin = user("f", &[]);
    fin.attrs.insert("dept".into(), json!("finance"));
    assert!(decide(&p, &fin, Action::CallTool, &tool("ledger", "read"), None).allowed);
    assert!(
        !decide(
            &p,
            &user("g", &[]),
            Action::CallTool,
            &tool("ledger", "read"),
            None
        )
        .allowed
    );
}

#[test]
fn context_time_source_and_era() {
    let p = policies(
        r#"
        @id("office-hours") permit (principal, action, resource)
        when { context.weekday <= 5 && context.hour >= 8 && context.hour < 18 && context.time > datetime("2026-01-01") };
        @id("internal-only") forbid (principal, action, resource)
        unless { context has source && context.source.isInRange(ip("10.0.0.0/8")) };
        "#,
    );
    let who = user("a", &[]);
    let t = tool("x", "y");
    let mut c = ctx(None);
    c.source = Some("10.1.2.3".parse().unwrap());
    let req = |c: CallContext<'static>| {
        p.decide(&Request {
            principal: &who,
            action: Action::CallTool,
            target: &t,
            context: c,
        })
    };
    assert!(req(c).allowed);
    c.source = Some("192.0.2.1".parse().unwrap());
    assert_eq!(req(c).reason.code, code::FORBIDDEN);
    c.source = None;
    assert_eq!(req(c).reason.code, code::FORBIDDEN);
    c.source = Some("10.1.2.3".parse().unwrap());
    // Saturday.
    c.time = UNIX_EPOCH + Duration::from_secs(1_795_429_805 - 2 * 86_400);
    assert_eq!(req(c).reason.code, code::NO_PERMIT);
}

#[test]
fn errors_name_file_line_column_and_policy() {
    let text = "permit (principal, action, resource);\n\n@id(\"typo\")\npermit (principal, action, resource)\nwhen { resource.risc == \"high\" };\n";
    let err = Policies::from_text("p.cedar", text).unwrap_err();
    let PolicyError::Invalid { problems } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1, "{err}");
    let p = &problems[0];
    assert_eq!(p.policy.as_deref(), Some("typo"));
    assert_eq!(p.line, Some(5), "{err}");
    assert!(p.column.is_some());
    assert!(err.to_string().starts_with("p.cedar:5:"), "{err}");

    let err = Policies::from_text(
        "q.cedar",
        "permit (principal, action, resource)\nwhen { 1 + };",
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("q.cedar:2:"), "{err}");

    let err = Policies::from_text(
        "r.cedar",
        "permit (principal, action == Toolgate::Action::\"cal_tool\", resource);",
    )
    .unwrap_err();
    assert!(err.to_string().contains("r.cedar#1"), "{err}");
    assert!(err.to_string().contains("unrecognized action"), "{err}");

    // Arguments must be declared before a policy reads them.
    let err = Policies::from_text(
        "s.cedar",
        "permit (principal, action, resource) when { context.args.amount < 5 };",
    )
    .unwrap_err();
    assert!(err.to_string().contains("type Args"), "{err}");

    let err = Policies::from_text("t.cedar", "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);").unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
}

#[test]
fn slicing_changes_no_decision() {
    // Every policy shape the slicer files differently, against every request
    // shape: the sliced decision must equal the whole set's.
    let text = r#"
        @id("any") permit (principal in Toolgate::Group::"all", action, resource);
        @id("tool-type") permit (principal in Toolgate::Group::"t", action, resource is Toolgate::Tool);
        @id("eq-tool") forbid (principal in Toolgate::Group::"f", action == Toolgate::Action::"call_tool", resource == Toolgate::Tool::"a/x");
        @id("in-server") permit (principal in Toolgate::Group::"s", action in Toolgate::Action::"use", resource in Toolgate::Server::"a");
        @id("is-in") forbid (principal in Toolgate::Group::"g", action, resource is Toolgate::Prompt in Toolgate::Server::"a");
        @id("server-eq") forbid (principal in Toolgate::Group::"h", action in Toolgate::Action::"discover", resource == Toolgate::Server::"b");
        @id("actions") permit (principal in Toolgate::Group::"r", action in [Toolgate::Action::"read_resource", Toolgate::Action::"complete"], resource);
        @id("err") forbid (principal in Toolgate::Group::"e", action, resource is Toolgate::Tool) when { context.args has amount && context.args.amount > 3 };
    "#;
    let p = policies(text);
    let l = Labels::default();
    let servers = ["a", "b"];
    let mut targets = Vec::new();
    for s in servers {
        let r = ServerRef {
            name: s,
            labels: &l,
        };
        targets.push(Target::server(r));
        targets.push(Target::tool(r, "x", "x", None, None));
        targets.push(Target::prompt(r, "x", "x", None));
        targets.push(Target::resource(r, "file:///x", "file:///x"));
    }
    let groups = ["all", "t", "f", "s", "g", "h", "r", "e", "none"];
    let odd = json!({"amount": "odd"});
    let big = json!({"amount": 5});
    let small = json!({"amount": 1});
    let mut compared = 0;
    // Each request three times with other arguments: the first puts what the
    // context-free policies found in the memo, the others reuse it.
    for (g, args) in groups
        .into_iter()
        .flat_map(|g| [(g, &odd), (g, &big), (g, &small)])
    {
        let who = user("u", &[g, if g == "f" { "all" } else { "none" }]);
        for t in &targets {
            for action in Action::ALL {
                if !action.resource_kinds().contains(&t.kind()) {
                    continue;
                }
                let req = Request {
                    principal: &who,
                    action,
                    target: t,
                    context: ctx(Some(args)),
                };
                let sliced = p.decide(&req);
                let whole = p.decide_unsliced(&req);
                assert_eq!(
                    sliced.allowed,
                    whole.allowed,
                    "{g} {action} {}: {sliced:?}",
                    t.uid()
                );
                assert_eq!(
                    sliced.reason.code,
                    whole.reason.code,
                    "{g} {action} {}",
                    t.uid()
                );
                let (mut a, mut b) = (sliced.reason.policies, whole.reason.policies);
                a.sort();
                b.sort();
                assert_eq!(a, b, "{g} {action} {} {args}", t.uid());
                compared += 1;
            }
        }
    }
    assert!(compared > 300);
}

#[test]
fn remembered_outcomes_follow_principal_target_and_arguments() {
    let p = policies(
        r#"
        @id("finance") permit (principal in Toolgate::Group::"finance", action, resource);
        @id("high-risk") forbid (principal, action, resource) when { resource has risk && resource.risk == "high" };
        @id("limit") forbid (principal, action, resource) when { context.args has amount && context.args.amount >= 1000 };
        @id("weekdays") forbid (principal, action, resource) unless { context.weekday <= 5 };
        "#,
    );
    let refund = tool("payments", "refund");
    let alice = user("alice", &["finance"]);
    let bob = user("bob", &["eng"]);
    let small = json!({"amount": 50});
    let big = json!({"amount": 5000});
    let call = |who: &Principal, t: &Target, args: &Value| {
        decide(&p, who, Action::CallTool, t, Some(args)).reason.code
    };
    for _ in 0..2 {
        assert_eq!(call(&alice, &refund, &small), code::ALLOWED);
        assert_eq!(call(&alice, &refund, &big), code::FORBIDDEN);
    }
    // Another principal is another key.
    assert_eq!(call(&bob, &refund, &small), code::NO_PERMIT);
    assert_eq!(call(&alice, &refund, &small), code::ALLOWED);
    // The same tool labelled high risk in a new catalog: a new target.
    let high = labels(Some("high"), None);
    let relabelled = Target::tool(
        ServerRef {
            name: "payments",
            labels: &high,
        },
        "payments__refund",
        "refund",
        None,
        None,
    );
    assert_eq!(relabelled.uid(), refund.uid());
    let d = decide(&p, &alice, Action::CallTool, &relabelled, Some(&small));
    assert_eq!(d.reason.policies, ["high-risk"]);
    // The context still counts on every call: a Saturday.
    let saturday = p.decide(&Request {
        principal: &alice,
        action: Action::CallTool,
        target: &refund,
        context: CallContext {
            time: UNIX_EPOCH + Duration::from_secs(1_795_429_805 - 2 * 86_400),
            ..ctx(Some(&small))
        },
    });
    assert_eq!(saturday.reason.policies, ["weekdays"]);
    assert_eq!(call(&alice, &refund, &small), code::ALLOWED);
}

#[test]
fn what_policies_read_of_the_context_is_found_in_them() {
    use super::slice::Reads;
    let reads = |text: &str| Reads::of(&cedar_policy::Policy::parse(None, text).unwrap());
    let attrs = |names: &[&str]| Reads::Attrs(names.iter().map(|n| (*n).to_owned()).collect());
    assert_eq!(reads("permit (principal, action, resource);"), Reads::None);
    assert_eq!(
        reads(r#"permit (principal, action, resource) when { resource.name == "context" };"#),
        Reads::None
    );
    assert_eq!(
        reads(
            "forbid (principal, action, resource) when { context.args has amount && context.args.amount >= 5 };"
        ),
        attrs(&["args"])
    );
    assert_eq!(
        reads(
            r#"forbid (principal, action, resource) unless { context has source && context.source.isInRange(ip("10.0.0.0/8")) && context["era"] == "modern" };"#
        ),
        attrs(&["era", "source"])
    );
    assert_eq!(
        reads("permit (principal, action, resource) when { context == {} };"),
        Reads::All
    );
    assert_eq!(
        reads("permit (principal, action, resource) when { {a: context}.a has hour };"),
        Reads::All
    );
}

#[test]
fn reload_keeps_the_old_set_until_a_good_one_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.cedar");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(r#"permit (principal, action, resource in Toolgate::Server::"a");"#);
    let store = PolicyStore::open(dir.path()).unwrap();
    let who = user("u", &[]);
    let a = tool("a", "x");
    let b = tool("b", "x");
    let allowed = |t: &Target| {
        store
            .current()
            .decide(&Request {
                principal: &who,
                action: Action::CallTool,
                target: t,
                context: ctx(None),
            })
            .allowed
    };
    assert!(allowed(&a) && !allowed(&b));
    assert_eq!(store.current().generation(), 0);

    write("permit (principal, action, resource) when { resource.nope };");
    let err = store.reload().unwrap_err();
    assert!(err.to_string().contains("main.cedar:1:"), "{err}");
    // Still the old decisions.
    assert!(allowed(&a) && !allowed(&b));
    assert_eq!(store.current().generation(), 0);

    write(r#"permit (principal, action, resource in Toolgate::Server::"b");"#);
    assert_eq!(store.reload().unwrap(), Reloaded::Swapped { generation: 1 });
    assert!(!allowed(&a) && allowed(&b));
    assert_eq!(
        store.reload().unwrap(),
        Reloaded::Unchanged { generation: 1 }
    );
}

#[test]
fn the_watcher_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cedar"), "").unwrap();
    let store = std::sync::Arc::new(PolicyStore::open(dir.path()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let _watcher = store
        .watch(Duration::from_millis(50), move |r| {
            let _ = tx.send(r.map_err(|e| e.to_string()));
        })
        .unwrap();
    // Replace the file the way editors and ConfigMaps do: write beside, rename over.
    let tmp = dir.path().join(".a.cedar.tmp");
    std::fs::write(&tmp, "permit (principal, action, resource);").unwrap();
    std::fs::rename(&tmp, dir.path().join("a.cedar")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(Reloaded::Swapped { generation })) => {
                assert_eq!(generation, 1);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("no reload within 20 s: {e}"),
        }
    }
    assert!(
        store
            .current()
            .decide(&Request {
                principal: &user("u", &[]),
                action: Action::CallTool,
                target: &tool("a", "b"),
                context: ctx(None),
            })
            .allowed
    );
}

#[test]
fn the_example_policies_load_and_decide() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let p = Policies::load(&dir).unwrap_or_else(|e| panic!("examples/policies:\n{e}"));
    assert!(p.len() > 5);
    let mut alice = user("alice", &["finance"]);
    alice.tenant = None;
    let payments = labels(Some("high"), Some("production"));
    let refund = Target::tool(
        ServerRef {
            name: "payments",
            labels: &payments,
        },
        "payments__refund",
        "refund",
        None,
        None,
    );
    let ok = json!({"amount": 200, "currency": "EUR"});
    let d = decide(&p, &alice, Action::CallTool, &refund, Some(&ok));
    assert!(d.allowed, "{d:?}");
    let too_much = json!({"amount": 5000, "currency": "EUR"});
    let d = decide(&p, &alice, Action::CallTool, &refund, Some(&too_much));
    assert_eq!(d.reason.code, code::FORBIDDEN, "{d:?}");
    let bypass = json!({"amount": "5000", "currency": "EUR"});
    assert!(!decide(&p, &alice, Action::CallTool, &refund, Some(&bypass)).allowed);
}

#[test]
fn a_list_decides_each_item_as_one_call_would() {
    // Arguments unknown (some rules read them), other context known (one
    // rule reads the era): deciding a whole list with what the principal and
    // context build shared must equal deciding each item alone.
    let text = r#"
        @id("any") permit (principal in Toolgate::Group::"all", action, resource);
        @id("in-server") permit (principal in Toolgate::Group::"s", action, resource in Toolgate::Server::"a");
        @id("no-x") forbid (principal in Toolgate::Group::"f", action, resource == Toolgate::Tool::"b/x");
        @id("args") forbid (principal in Toolgate::Group::"e", action, resource is Toolgate::Tool) when { context.args has amount && context.args.amount > 3 };
        @id("era") forbid (principal in Toolgate::Group::"m", action, resource is Toolgate::Tool in Toolgate::Server::"b") when { context["era"] == "modern" };
        @id("legacy") permit (principal in Toolgate::Group::"l", action, resource is Toolgate::Tool) when { context["era"] == "legacy" };
    "#;
    let p = policies(text);
    let l = Labels::default();
    let mut targets = Vec::new();
    for s in ["a", "b", "c"] {
        let r = ServerRef {
            name: s,
            labels: &l,
        };
        for t in ["x", "y"] {
            targets.push(Target::tool(r, t, t, None, None));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for groups in [
        &["all"][..],
        &["s"],
        &["all", "f"],
        &["all", "e"],
        &["all", "m"],
        &["l"],
        &["none"],
    ] {
        let who = user("u", groups);
        let each = p.could_allow_each(&who, Action::CallTool, &targets, ctx(None));
        let alone: Vec<bool> = targets
            .iter()
            .map(|t| {
                p.could_allow(&Request {
                    principal: &who,
                    action: Action::CallTool,
                    target: t,
                    context: ctx(None),
                })
            })
            .collect();
        assert_eq!(each, alone, "{groups:?}");
        seen.extend(each);
    }
    assert_eq!(seen.len(), 2, "the lists hold both verdicts");
}
