//! `toolgate policy simulate`: what a candidate policy set would have decided
//! about the calls in the audit trail, and which decisions it would change.
//!
//! Pure: recorded events, the candidate policies and the gateway config in, a
//! [`Report`] out (the CLI reads the events from the store). Each call is put
//! to the policies the way the gateway put it: the principal as recorded, the
//! target with the labels the config gives it, the context from the event, and
//! an item the caller could not see denied as `not_visible`. Two things are
//! not in the trail: a tool's MCP annotations (policies see the defaults MCP
//! assumes, the worst), and arguments where the config records only their
//! digest, nothing, or masks some of them. Those calls are decided for every
//! value the missing part could have had; one whose decision depends on it is
//! `undetermined`, never guessed.

use super::{
    Action, ArgsKnown, CallContext, Decision, Era, Policies, Reason, Request, ServerRef, Settled,
    Target, TargetKind,
};
use crate::audit::query::format_time;
use crate::audit::redact::MASK;
use crate::audit::{Event, EventKind, Verdict};
use crate::auth::Principal;
use crate::config::{Config, Labels};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// The reason code of a call outside its endpoint: the endpoint's rules are
/// config, which a policy change does not touch.
const NOT_EXPOSED: &str = "not_exposed";
/// The reason code of an item no policy let the caller see.
const NOT_VISIBLE: &str = "not_visible";

/// What replaying a trail found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Calls put to the candidate policies.
    pub replayed: usize,
    pub allow_to_deny: usize,
    pub deny_to_allow: usize,
    /// Calls whose new decision depends on arguments the trail does not hold.
    pub undetermined: usize,
    pub skipped: Skipped,
    /// Every call whose decision would change or might, in trail order.
    pub calls: Vec<Change>,
}

/// Recorded decisions that were not replayed.
#[derive(Debug, Default, Serialize)]
pub struct Skipped {
    /// Refused by their endpoint's rules (config, not policy).
    pub not_exposed: usize,
    /// Recorded without what a replay needs: the principal, the endpoint, the
    /// server, or the target and its server's own name for it.
    pub incomplete: usize,
}

/// One call whose decision would change (or might).
#[derive(Debug, Serialize)]
pub struct Change {
    /// The event's id in the trail.
    pub id: String,
    pub time: String,
    pub time_us: i64,
    /// `user`, or `tenant/user`.
    pub principal: String,
    pub method: String,
    pub server: String,
    /// The tool or prompt as clients see it, or the resource URI.
    pub target: String,
    pub arguments: ArgsSource,
    pub recorded: Ruling,
    pub new: Ruling,
}

/// What the replay knew of a call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgsSource {
    /// As the call sent them.
    Recorded,
    /// Recorded with some values masked; those were unknown.
    Masked,
    /// Only a digest, or nothing: all unknown.
    NotRecorded,
    /// The action takes none (reading or subscribing to a resource).
    None,
}

/// A decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ruling {
    /// `allow`, `deny` or `undetermined`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The deciding policies; for `undetermined`, those reading what is unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

impl Report {
    /// Calls whose decision would certainly change.
    pub fn changed(&self) -> usize {
        self.allow_to_deny + self.deny_to_allow
    }

    /// One line per listed call, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.calls {
            let _ = writeln!(
                out,
                "{}  {}  {}  {}  {} → {}",
                c.time, c.principal, c.method, c.target, c.recorded, c.new
            );
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// `N replayed, M would change (allow→deny a, deny→allow b), K undetermined`
    /// and what was skipped.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} replayed, {} would change (allow→deny {}, deny→allow {}), {} undetermined",
            self.replayed,
            self.changed(),
            self.allow_to_deny,
            self.deny_to_allow,
            self.undetermined
        );
        let s = &self.skipped;
        if s.not_exposed + s.incomplete > 0 {
            let mut why = Vec::new();
            if s.not_exposed > 0 {
                why.push(format!("{} not exposed by their endpoint", s.not_exposed));
            }
            if s.incomplete > 0 {
                why.push(format!(
                    "{} recorded without what a replay needs",
                    s.incomplete
                ));
            }
            let _ = write!(
                line,
                "; {} skipped ({})",
                s.not_exposed + s.incomplete,
                why.join(", ")
            );
        }
        line
    }
}

impl std::fmt::Display for Ruling {
    /// `allow (allowed: p1, p2)`, `deny (no_permit)`, `undetermined (depends on: p3)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.decision)?;
        let why = if self.decision == "undetermined" {
            Some("depends on")
        } else {
            self.reason_code.as_deref()
        };
        match (why, self.policies.is_empty()) {
            (Some(why), true) => write!(f, " ({why})"),
            (Some(why), false) => write!(f, " ({why}: {})", self.policies.join(", ")),
            (None, false) => write!(f, " ({})", self.policies.join(", ")),
            (None, true) => Ok(()),
        }
    }
}

/// Whether the trail holds a policy decision of this event that a replay can
/// revisit: a request decided about one tool, prompt or resource.
pub fn is_decided_call(e: &Event) -> bool {
    e.kind == EventKind::Request
        && e.decision.is_some()
        && e.method
            .as_deref()
            .and_then(|m| action_of(m, e.target.as_deref().unwrap_or("")))
            .is_some()
}

/// Replay `events` (oldest first) against `policies`, with `config` for the
/// servers' and items' labels.
pub fn simulate(events: &[Event], policies: &Policies, config: &Config) -> Report {
    let mut report = Report::default();
    for e in events.iter().filter(|e| is_decided_call(e)) {
        if e.reason_code.as_deref() == Some(NOT_EXPOSED) {
            report.skipped.not_exposed += 1;
            continue;
        }
        let Some(call) = Call::of(e) else {
            report.skipped.incomplete += 1;
            continue;
        };
        report.replayed += 1;
        let was_allowed = e.decision == Some(Verdict::Allow);
        let new = match call.decide(policies, config) {
            Settled::Decided(d) if d.allowed == was_allowed => continue,
            Settled::Decided(d) => {
                if was_allowed {
                    report.allow_to_deny += 1;
                } else {
                    report.deny_to_allow += 1;
                }
                Ruling {
                    decision: if d.allowed { "allow" } else { "deny" },
                    reason_code: Some(d.reason.code.to_owned()),
                    policies: d.reason.policies,
                }
            }
            Settled::Depends { policies } => {
                report.undetermined += 1;
                Ruling {
                    decision: "undetermined",
                    reason_code: None,
                    policies,
                }
            }
        };
        report.calls.push(Change {
            id: e.id.clone(),
            time: format_time(e.time_us),
            time_us: e.time_us,
            principal: call.principal.key(),
            method: call.method.to_owned(),
            server: call.server.to_owned(),
            target: call.exposed.to_owned(),
            arguments: call.args.source(),
            recorded: Ruling {
                decision: if was_allowed { "allow" } else { "deny" },
                reason_code: e.reason_code.clone(),
                policies: e.policies.clone(),
            },
            new,
        });
    }
    report
}

/// The action a method was decided as, and the kind of its target; `None`
/// for methods not decided per item (lists, tasks, pings).
fn action_of(method: &str, target: &str) -> Option<(Action, TargetKind)> {
    Some(match method {
        "tools/call" => (Action::CallTool, TargetKind::Tool),
        "prompts/get" => (Action::GetPrompt, TargetKind::Prompt),
        "resources/read" => (Action::ReadResource, TargetKind::Resource),
        "resources/subscribe" => (Action::Subscribe, TargetKind::Resource),
        // A completion is about a prompt or a resource: an exposed prompt name
        // never holds a `:`, a URI always does (its scheme).
        "completion/complete" if crate::names::valid_exposed_name(target) => {
            (Action::Complete, TargetKind::Prompt)
        }
        "completion/complete" => (Action::Complete, TargetKind::Resource),
        _ => return None,
    })
}

/// What the replay knows of a call's arguments.
enum Args<'a> {
    Known(Option<&'a Value>),
    Masked(&'a Value),
    Unknown,
}

impl Args<'_> {
    fn source(&self) -> ArgsSource {
        match self {
            Args::Known(Some(_)) => ArgsSource::Recorded,
            Args::Known(None) => ArgsSource::None,
            Args::Masked(_) => ArgsSource::Masked,
            Args::Unknown => ArgsSource::NotRecorded,
        }
    }
}

/// A recorded call, read back into what the gateway decided it on.
struct Call<'a> {
    principal: Principal,
    action: Action,
    kind: TargetKind,
    method: &'a str,
    server: &'a str,
    exposed: &'a str,
    original: &'a str,
    args: Args<'a>,
    context: CallContext<'a>,
}

impl<'a> Call<'a> {
    fn of(e: &'a Event) -> Option<Call<'a>> {
        let method = e.method.as_deref()?;
        let exposed = e.target.as_deref()?;
        let (action, kind) = action_of(method, exposed)?;
        let principal: Principal = serde_json::from_str(e.principal.as_ref()?.get()).ok()?;
        // The name policies know an item by is the server's own; the exposed
        // one cannot be turned back into it (prefixes, renames, clashes).
        let original = e.original.as_deref()?;
        let args = match (&e.arguments, kind) {
            // The gateway decides resources without arguments.
            (_, TargetKind::Resource) => Args::Known(None),
            (Some(a), _) if holds_mask(a) => Args::Masked(a),
            (Some(a), _) => Args::Known(Some(a)),
            // A digest, or nothing: a call without arguments records nothing
            // either, so even "none" is not known.
            (None, _) => Args::Unknown,
        };
        // The gateway decided as the request arrived; the event is stamped as
        // it ended.
        let arrived = e.time_us - e.latency_us.unwrap_or(0);
        let context = CallContext {
            args: None,
            source: e.source.as_deref().and_then(|s| s.parse().ok()),
            endpoint: e.endpoint.as_deref()?,
            session: e.session.as_deref(),
            era: match e.era.as_deref() {
                Some("modern") => Era::Modern,
                _ => Era::Legacy,
            },
            time: UNIX_EPOCH + Duration::from_micros(u64::try_from(arrived).unwrap_or(0)),
        };
        Some(Call {
            principal,
            action,
            kind,
            method,
            server: e.server.as_deref()?,
            exposed,
            original,
            args,
            context,
        })
    }

    fn target(&self, config: &Config) -> Target {
        let none = Labels::default();
        let cfg = config.servers.get(self.server);
        let server = ServerRef {
            name: self.server,
            labels: cfg.map_or(&none, |s| &s.labels),
        };
        match self.kind {
            // The tool's annotations are not recorded: none, which policies
            // see as MCP's worst-case defaults.
            TargetKind::Tool => Target::tool(
                server,
                self.exposed,
                self.original,
                cfg.and_then(|s| s.tools.labels.get(self.original)),
                None,
            ),
            TargetKind::Prompt => Target::prompt(
                server,
                self.exposed,
                self.original,
                cfg.and_then(|s| s.prompts.labels.get(self.original)),
            ),
            TargetKind::Resource | TargetKind::Server => {
                Target::resource(server, self.exposed, self.original)
            }
        }
    }

    /// The candidate's decision, as the gateway takes it: a tool or prompt the
    /// caller could not use with any arguments is not visible, whatever else.
    fn decide(&self, policies: &Policies, config: &Config) -> Settled {
        let target = self.target(config);
        let mut req = Request {
            principal: &self.principal,
            action: self.action,
            target: &target,
            context: self.context,
        };
        let listed_by = match self.kind {
            TargetKind::Tool => Some(Action::CallTool),
            TargetKind::Prompt => Some(Action::GetPrompt),
            // Whether a resource was listed is not recorded; a resource that
            // is not visible is one no arguments allow, which `decide` denies
            // as well (only the reason code would differ).
            TargetKind::Resource | TargetKind::Server => None,
        };
        if let Some(action) = listed_by
            && !policies.could_allow(&Request { action, ..req })
        {
            return Settled::Decided(Decision {
                allowed: false,
                reason: Reason {
                    code: NOT_VISIBLE,
                    policies: Vec::new(),
                    message: "no policy lets the caller see it".into(),
                },
            });
        }
        match self.args {
            Args::Known(args) => {
                req.context.args = args;
                Settled::Decided(policies.decide(&req))
            }
            Args::Masked(args) => {
                req.context.args = Some(args);
                policies.decide_partly(&req, ArgsKnown::ExceptMasked(MASK))
            }
            Args::Unknown => policies.decide_partly(&req, ArgsKnown::Nothing),
        }
    }
}

/// Whether recording masked anything in `v` (a credential-looking field or
/// string, a configured `mask` field).
fn holds_mask(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(MASK),
        Value::Array(items) => items.iter().any(holds_mask),
        Value::Object(map) => map.values().any(holds_mask),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;
    use serde_json::json;
    use std::path::PathBuf;

    const CONFIG: &str = "servers:\n  pay:\n    command: x\n    labels: { risk: low }\n    tools: { labels: { refund: { risk: high } } }\n";

    fn config() -> Config {
        crate::config::load_str(CONFIG, "t.yaml", false).unwrap()
    }

    /// Policies from text, with `Args` declared for `amount` and `token`.
    fn policies(text: &str) -> Policies {
        Policies::compile(
            &[(PathBuf::from("p.cedar"), text.to_owned())],
            &[(
                PathBuf::from("args.cedarschema"),
                r#"namespace Toolgate { type Args = { "amount"?: Long, "token"?: String }; }"#
                    .to_owned(),
            )],
        )
        .unwrap()
    }

    fn principal(user: &str, groups: &[&str]) -> Principal {
        Principal {
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            method: AuthMethod::ApiKey,
            ..Principal::anonymous(user)
        }
    }

    /// A recorded `tools/call` of `pay/<tool>` by `who`, with its decision.
    fn call(who: &Principal, tool: &str, allowed: bool, code: &str) -> Event {
        let mut e = Event::new(EventKind::Request).by(who);
        e.endpoint = Some("/mcp".into());
        e.era = Some("legacy".into());
        e.method = Some("tools/call".into());
        e.server = Some("pay".into());
        e.target = Some(format!("pay__{tool}"));
        e.original = Some(tool.into());
        e.decision = Some(if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        });
        e.reason_code = Some(code.into());
        e
    }

    fn with_args(mut e: Event, args: Value) -> Event {
        e.arguments = Some(args);
        e
    }

    fn digest_only(mut e: Event, args: &Value) -> Event {
        e.arguments_digest = Some(crate::audit::redact::digest(args));
        e
    }

    const EVERYONE: &str = "@id(\"everyone\")\npermit (principal, action, resource);\n";
    const SUPPORT_ONLY: &str =
        "@id(\"support\")\npermit (principal in Toolgate::Group::\"support\", action, resource);\n";
    const SMALL_REFUNDS: &str = "@id(\"small-refunds\")\npermit (principal, action == Toolgate::Action::\"call_tool\", resource)\nwhen { context.args has amount && context.args.amount < 100 };\n";

    #[test]
    fn a_tightened_policy_turns_allow_into_deny_and_lists_only_changes() {
        let sam = principal("sam", &["support"]);
        let bob = principal("bob", &[]);
        let events = [
            call(&sam, "status", true, "allowed"),
            call(&bob, "status", true, "allowed"),
            call(&bob, "status", true, "allowed"),
        ];
        let r = simulate(&events, &policies(SUPPORT_ONLY), &config());
        assert_eq!(
            (r.replayed, r.allow_to_deny, r.deny_to_allow, r.undetermined),
            (3, 2, 0, 0)
        );
        assert_eq!(r.calls.len(), 2);
        assert!(r.calls.iter().all(|c| c.principal == "bob"));
        // Bob can use nothing at all: the tool disappears for him.
        assert_eq!(r.calls[0].new.decision, "deny");
        assert_eq!(r.calls[0].new.reason_code.as_deref(), Some(NOT_VISIBLE));
        assert_eq!(r.calls[0].recorded.decision, "allow");
        assert_eq!(r.calls[0].target, "pay__status");
        assert!(
            r.text().contains(
                "3 replayed, 2 would change (allow→deny 2, deny→allow 0), 0 undetermined"
            ),
            "{}",
            r.text()
        );
    }

    #[test]
    fn a_loosened_policy_turns_deny_into_allow() {
        let bob = principal("bob", &[]);
        let sam = principal("sam", &["support"]);
        let events = [
            call(&bob, "status", false, "not_visible"),
            call(&sam, "status", true, "allowed"),
        ];
        let r = simulate(&events, &policies(EVERYONE), &config());
        assert_eq!((r.replayed, r.deny_to_allow, r.allow_to_deny), (2, 1, 0));
        let c = &r.calls[0];
        assert_eq!(c.principal, "bob");
        assert_eq!(
            c.new,
            Ruling {
                decision: "allow",
                reason_code: Some("allowed".into()),
                policies: vec!["everyone".into()],
            }
        );
        assert_eq!(c.recorded.reason_code.as_deref(), Some("not_visible"));
    }

    #[test]
    fn recorded_arguments_decide_argument_conditions() {
        let sam = principal("sam", &["support"]);
        let events = [
            with_args(
                call(&sam, "refund", true, "allowed"),
                json!({ "amount": 500 }),
            ),
            with_args(
                call(&sam, "refund", true, "allowed"),
                json!({ "amount": 50 }),
            ),
        ];
        let r = simulate(&events, &policies(SMALL_REFUNDS), &config());
        assert_eq!((r.replayed, r.allow_to_deny, r.undetermined), (2, 1, 0));
        assert_eq!(r.calls[0].arguments, ArgsSource::Recorded);
        assert_eq!(r.calls[0].new.reason_code.as_deref(), Some("no_permit"));
    }

    #[test]
    fn a_digest_leaves_argument_conditions_undetermined_and_nothing_else() {
        let sam = principal("sam", &["support"]);
        let bob = principal("bob", &[]);
        let args = json!({ "amount": 500 });
        let events = [
            digest_only(call(&sam, "refund", true, "allowed"), &args),
            digest_only(call(&bob, "refund", true, "allowed"), &args),
        ];
        let r = simulate(&events, &policies(SMALL_REFUNDS), &config());
        assert_eq!((r.replayed, r.changed(), r.undetermined), (2, 0, 2));
        assert_eq!(r.calls[0].new.decision, "undetermined");
        assert_eq!(r.calls[0].new.policies, vec!["small-refunds".to_owned()]);
        assert_eq!(r.calls[0].arguments, ArgsSource::NotRecorded);
        assert!(
            r.text()
                .contains("undetermined (depends on: small-refunds)"),
            "{}",
            r.text()
        );
        // A policy that does not read the arguments decides without them.
        let r = simulate(&events, &policies(SUPPORT_ONLY), &config());
        assert_eq!((r.replayed, r.allow_to_deny, r.undetermined), (2, 1, 0));
        assert_eq!(r.calls[0].principal, "bob");
        // A forbid that certainly applies decides whatever the arguments (and
        // hides the tool).
        let forbid = format!(
            "{SMALL_REFUNDS}@id(\"no-bob\")\nforbid (principal == Toolgate::User::\"bob\", action, resource);\n"
        );
        let r = simulate(&events, &policies(&forbid), &config());
        assert_eq!((r.allow_to_deny, r.undetermined), (1, 1));
        let bob_call = r.calls.iter().find(|c| c.principal == "bob").unwrap();
        assert_eq!(bob_call.new.reason_code.as_deref(), Some(NOT_VISIBLE));
    }

    #[test]
    fn masked_values_are_unknown_and_the_rest_is_known() {
        let sam = principal("sam", &["support"]);
        let recorded = json!({ "amount": 500, "token": MASK });
        let events = [with_args(call(&sam, "refund", true, "allowed"), recorded)];
        // The amount was recorded: decided.
        let r = simulate(&events, &policies(SMALL_REFUNDS), &config());
        assert_eq!((r.allow_to_deny, r.undetermined), (1, 0));
        assert_eq!(r.calls[0].arguments, ArgsSource::Masked);
        // The token was masked: a policy that reads it cannot be decided.
        let token = "@id(\"token\")\npermit (principal, action, resource)\nwhen { context.args has token && context.args.token == \"let-me-in\" };\n";
        let r = simulate(&events, &policies(token), &config());
        assert_eq!((r.changed(), r.undetermined), (0, 1));
        assert_eq!(r.calls[0].new.policies, vec!["token".to_owned()]);
    }

    #[test]
    fn labels_come_from_the_config_and_names_from_the_server() {
        // `refund` is labelled high risk over the server's low.
        let low_risk = "@id(\"low\")\npermit (principal, action, resource) when { resource has risk && resource.risk == \"low\" };\n";
        let sam = principal("sam", &[]);
        let events = [
            call(&sam, "refund", true, "allowed"),
            call(&sam, "status", true, "allowed"),
        ];
        let r = simulate(&events, &policies(low_risk), &config());
        assert_eq!(r.allow_to_deny, 1);
        assert_eq!(r.calls[0].target, "pay__refund");
        let by_uid = "@id(\"status\")\npermit (principal, action, resource == Toolgate::Tool::\"pay/status\");\n";
        let r = simulate(&events, &policies(by_uid), &config());
        assert_eq!(r.allow_to_deny, 1);
        assert_eq!(r.calls[0].target, "pay__refund");
    }

    #[test]
    fn endpoint_rules_and_incomplete_events_are_skipped() {
        let bob = principal("bob", &[]);
        let mut no_original = call(&bob, "status", false, "no_permit");
        no_original.original = None;
        let mut list = call(&bob, "status", true, "allowed");
        list.method = Some("tools/list".into());
        let mut undecided = call(&bob, "status", true, "allowed");
        undecided.decision = None;
        let events = [
            call(&bob, "status", false, NOT_EXPOSED),
            no_original,
            list,
            undecided,
        ];
        let r = simulate(&events, &policies(EVERYONE), &config());
        assert_eq!(r.replayed, 0);
        assert_eq!((r.skipped.not_exposed, r.skipped.incomplete), (1, 1));
        assert!(r.calls.is_empty());
        assert!(
            r.summary().ends_with(
                "; 2 skipped (1 not exposed by their endpoint, 1 recorded without what a replay needs)"
            ),
            "{}",
            r.summary()
        );
    }

    #[test]
    fn resources_are_decided_without_arguments_and_completions_by_their_target() {
        let bob = principal("bob", &[]);
        let mut read = call(&bob, "ledger", true, "allowed");
        read.method = Some("resources/read".into());
        read.target = Some("pay://ledger".into());
        read.original = Some("pay://ledger".into());
        let mut complete = read.clone();
        complete.method = Some("completion/complete".into());
        let reads = "@id(\"reads\")\npermit (principal, action == Toolgate::Action::\"read_resource\", resource);\n";
        let r = simulate(&[read, complete], &policies(reads), &config());
        assert_eq!((r.replayed, r.allow_to_deny, r.undetermined), (2, 1, 0));
        assert_eq!(r.calls[0].method, "completion/complete");
        assert_eq!(r.calls[0].arguments, ArgsSource::None);
    }
}
