//! Deciding a call whose arguments are known only in part — replaying the
//! audit trail, which may hold them masked, or only their digest — without
//! ever guessing: either every value the unknown part could have had leads to
//! the same decision, or the answer is "it depends".
//!
//! Cedar's partial evaluation does the work, with one gap filled here: once
//! anything in the context is unknown, Cedar cannot look into the context
//! record at all (it holds extension values such as `time`), so every policy
//! that reads the context comes back undecided — `context.era` as much as
//! `context.args.amount`. A policy left undecided that does not read the
//! unknown arguments (as its text shows) is therefore decided again with the
//! context made whole; only the ones that do read them stay open.

use super::entities::{self, ArgsMode};
use super::values::Mapper;
use super::{Found, Policies, Request, verdict};
use cedar_policy::{PolicyId, PolicySet};
use serde_json::Value;
use std::collections::BTreeSet;

/// What is known of a call's arguments, for [`Policies::decide_partly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsKnown {
    /// Nothing: every value is possible.
    Nothing,
    /// `context.args`, except its members holding a string that contains this
    /// marker (values masked when they were recorded), which could have been
    /// anything.
    ExceptMasked(&'static str),
}

/// A decision that may hinge on values that are not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The same whatever the unknown values are.
    Decided(super::Decision),
    /// Allowed for some values and denied for others; these policies read them.
    Depends { policies: Vec<String> },
}

/// What [`Policies::prepare_partly`] builds once for a principal and a
/// context, for any number of targets.
pub(super) struct Prepared {
    unknown: Unknown,
    /// The principal and context of the partial evaluation.
    principal: cedar_policy::Entity,
    context: cedar_policy::Context,
    known: ArgsKnown,
    /// The principal's attributes and the arguments as policies get them.
    fixed: super::Conformed,
    /// The principal and context for deciding again with the context made
    /// whole ([`Policies::whole`]).
    whole: std::cell::OnceCell<(cedar_policy::Entity, cedar_policy::Context)>,
}

/// Which part of `context.args` is unknown.
enum Unknown {
    All,
    /// These members (their presence is known: keys are recorded).
    Members(BTreeSet<String>),
}

impl Policies {
    /// [`Policies::decide`] for a call whose arguments are known only in part:
    /// [`Settled::Decided`] when the decision is the same for every value the
    /// unknown part could have, [`Settled::Depends`] otherwise.
    ///
    /// A denial it settles is certain, but its code may differ from the one the
    /// full arguments would give (a forbid that reads them might also apply).
    pub fn decide_partly(&self, req: &Request<'_>, known: ArgsKnown) -> Settled {
        if self.slices_for(req).iter().all(Option::is_none) {
            return Settled::Decided(verdict(Found::default()));
        }
        let prepared = self.prepare_partly(req, known);
        self.decide_prepared(req, &prepared)
    }

    /// What a partial decision builds from the principal and the context
    /// alone: the same for every target of one request's principal and
    /// context, so a list builds it once for all its items.
    pub(super) fn prepare_partly(&self, req: &Request<'_>, known: ArgsKnown) -> Prepared {
        let unknown = match (known, req.context.args) {
            (ArgsKnown::Nothing, _) => Unknown::All,
            (ArgsKnown::ExceptMasked(mask), Some(Value::Object(map))) => Unknown::Members(
                map.iter()
                    .filter(|(_, v)| holds(v, mask))
                    .map(|(k, _)| k.clone())
                    .collect(),
            ),
            (ArgsKnown::ExceptMasked(mask), Some(v)) if holds(v, mask) => Unknown::All,
            (ArgsKnown::ExceptMasked(_), _) => Unknown::Members(BTreeSet::new()),
        };
        let mut mapper = Mapper::default();
        let fixed = self.conform(req, &mut mapper);
        let mut ctx = req.context;
        if let Some(a) = &fixed.args {
            ctx.args = Some(a);
        }
        let principal = fixed.principal.as_ref().unwrap_or(req.principal);
        let mode = match known {
            ArgsKnown::Nothing => ArgsMode::Unknown,
            ArgsKnown::ExceptMasked(mask) => {
                mapper.masked = Some(mask);
                ArgsMode::Given
            }
        };
        let principal_entity = entities::principal_entity(principal, &mut mapper);
        let context = entities::context(&ctx, mode, &|_| true, &mut mapper);
        Prepared {
            unknown,
            principal: principal_entity,
            context,
            known,
            fixed,
            whole: std::cell::OnceCell::new(),
        }
    }

    /// The principal and context for deciding again what Cedar left open:
    /// the arguments as recorded (or none: they are not read). Built the
    /// first time a target needs them.
    fn whole<'p>(
        &self,
        req: &Request<'_>,
        prepared: &'p Prepared,
    ) -> &'p (cedar_policy::Entity, cedar_policy::Context) {
        prepared.whole.get_or_init(|| {
            let mut ctx = req.context;
            ctx.args = match prepared.known {
                ArgsKnown::Nothing => None,
                ArgsKnown::ExceptMasked(_) => prepared.fixed.args.as_ref().or(ctx.args),
            };
            let principal = prepared.fixed.principal.as_ref().unwrap_or(req.principal);
            let mut mapper = Mapper::default();
            let entity = entities::principal_entity(principal, &mut mapper);
            let context = entities::context(&ctx, ArgsMode::Given, &|_| true, &mut mapper);
            (entity, context)
        })
    }

    /// [`Policies::decide_partly`] for one target, with what
    /// [`Policies::prepare_partly`] built for its principal and context.
    /// Callers first check that some slice applies to `req`.
    pub(super) fn decide_prepared(&self, req: &Request<'_>, prepared: &Prepared) -> Settled {
        let Some(mut found) =
            self.evaluate_partly(req, prepared.principal.clone(), prepared.context.clone())
        else {
            return Settled::Decided(super::internal_error());
        };
        // Decide again, with the arguments as recorded (or none: they are not
        // read), what Cedar left open without reading anything unknown.
        let residuals: Vec<String> = found
            .residual_permits
            .iter()
            .chain(&found.residual_forbids)
            .cloned()
            .collect();
        let whole: Vec<&String> = residuals
            .iter()
            .filter(|id| !self.reads_unknown(id, &prepared.unknown))
            .collect();
        if !whole.is_empty() {
            found.residual_permits.retain(|id| !whole.contains(&id));
            found.residual_forbids.retain(|id| !whole.contains(&id));
            let set = PolicySet::from_policies(
                whole
                    .iter()
                    .filter_map(|id| self.all.policy(&PolicyId::new(id.as_str())).cloned()),
            );
            let (principal, context) = self.whole(req, prepared);
            let (Ok(set), Some(entities)) = (set, super::request_entities(req, principal)) else {
                return Settled::Decided(super::internal_error());
            };
            let Some(request) = super::cedar_request(req, principal.uid(), context.clone()) else {
                return Settled::Decided(super::internal_error());
            };
            let r = self.authorizer.is_authorized(&request, &set, &entities);
            self.response_into(&r, &mut found);
        }
        settle(found)
    }

    /// Whether policy `id` may read an unknown part of the arguments, judged
    /// from its text. Unsure counts as yes.
    fn reads_unknown(&self, id: &str, unknown: &Unknown) -> bool {
        self.all
            .policy(&PolicyId::new(id))
            .and_then(|p| p.to_json().ok())
            .is_none_or(|est| reads(&est, unknown))
    }
}

/// Combine a partial evaluation: decided if no residual policy can change
/// the outcome. A forbid that certainly applies (or certainly fails) denies,
/// and without any permit that could apply nothing allows; otherwise a
/// residual forbid, or a permit that is only residual, leaves it open.
fn settle(mut f: Found) -> Settled {
    let denied = !f.forbids.is_empty() || !f.errored_forbids.is_empty();
    let could_permit = !f.permits.is_empty() || !f.residual_permits.is_empty();
    if denied || !could_permit || (f.residual_forbids.is_empty() && !f.permits.is_empty()) {
        return Settled::Decided(verdict(f));
    }
    let mut policies = std::mem::take(&mut f.residual_forbids);
    policies.append(&mut f.residual_permits);
    policies.sort();
    policies.dedup();
    Settled::Depends { policies }
}

/// Whether a JSON value holds a string containing `mask`.
fn holds(v: &Value, mask: &str) -> bool {
    match v {
        Value::String(s) => s.contains(mask),
        Value::Array(items) => items.iter().any(|i| holds(i, mask)),
        Value::Object(map) => map.values().any(|i| holds(i, mask)),
        _ => false,
    }
}

/// Whether an expression in Cedar's JSON form (a policy's, whole) may read
/// an unknown part of `context.args`. Reading `context.X` for another `X`, or
/// asking whether `context.args` has a member, reads nothing unknown; using
/// `context` or `context.args` whole does.
fn reads(e: &Value, unknown: &Unknown) -> bool {
    let is_context = |v: &Value| v.get("Var").and_then(Value::as_str) == Some("context");
    let is_args = |v: &Value| {
        v.get(".").is_some_and(|a| {
            a.get("left").is_some_and(is_context)
                && a.get("attr").and_then(Value::as_str) == Some("args")
        })
    };
    match e {
        Value::Array(items) => items.iter().any(|i| reads(i, unknown)),
        Value::Object(map) => {
            for op in [".", "has"] {
                let Some(access) = map.get(op) else { continue };
                let (Some(left), Some(attr)) = (
                    access.get("left"),
                    access.get("attr").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if is_context(left) {
                    // `context.args` itself, used whole.
                    return op == "." && attr == "args" && !is_none(unknown);
                }
                if is_args(left) {
                    return match unknown {
                        Unknown::All => true,
                        Unknown::Members(m) => op == "." && m.contains(attr),
                    };
                }
            }
            if is_context(e) {
                return !is_none(unknown);
            }
            map.values().any(|v| reads(v, unknown))
        }
        _ => false,
    }
}

fn is_none(unknown: &Unknown) -> bool {
    matches!(unknown, Unknown::Members(m) if m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::config::Labels;
    use crate::policy::{Action, CallContext, ServerRef, Target};
    use serde_json::json;
    use std::path::PathBuf;

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

    fn decide(p: &Policies, user: &str, args: Option<&Value>, known: ArgsKnown) -> Settled {
        let labels = Labels::default();
        let target = Target::tool(
            ServerRef {
                name: "pay",
                labels: &labels,
            },
            "pay__refund",
            "refund",
            None,
            None,
        );
        let who = Principal::anonymous(user);
        let mut context = CallContext::now("/mcp");
        context.args = args;
        p.decide_partly(
            &Request {
                principal: &who,
                action: Action::CallTool,
                target: &target,
                context,
            },
            known,
        )
    }

    fn allowed(s: &Settled) -> Option<bool> {
        match s {
            Settled::Decided(d) => Some(d.allowed),
            Settled::Depends { .. } => None,
        }
    }

    const SMALL: &str = "@id(\"small\")\npermit (principal, action, resource) when { context.args has amount && context.args.amount < 100 };\n";

    #[test]
    fn a_policy_reading_unknown_arguments_leaves_the_decision_open() {
        let p = policies(SMALL);
        assert_eq!(
            decide(&p, "a", None, ArgsKnown::Nothing),
            Settled::Depends {
                policies: vec!["small".into()]
            }
        );
    }

    #[test]
    fn policies_reading_the_rest_of_the_context_are_decided() {
        let text = "@id(\"office\")\npermit (principal, action, resource) when { context.endpoint == \"/mcp\" && context.era == \"legacy\" };\n\
                    @id(\"no-modern\")\nforbid (principal, action, resource) when { context.era == \"modern\" };\n";
        let p = policies(text);
        assert_eq!(
            allowed(&decide(&p, "a", None, ArgsKnown::Nothing)),
            Some(true)
        );
        let p = policies(
            "@id(\"other\")\npermit (principal, action, resource) when { context.endpoint == \"/other\" };\n",
        );
        assert_eq!(
            allowed(&decide(&p, "a", None, ArgsKnown::Nothing)),
            Some(false)
        );
    }

    #[test]
    fn what_is_certain_without_the_arguments_decides() {
        // A forbid that certainly applies denies whatever a permit might say.
        let text = format!(
            "{SMALL}@id(\"no-b\")\nforbid (principal == Toolgate::User::\"b\", action, resource);\n"
        );
        let p = policies(&text);
        assert_eq!(
            allowed(&decide(&p, "b", None, ArgsKnown::Nothing)),
            Some(false)
        );
        assert_eq!(
            decide(&p, "a", None, ArgsKnown::Nothing),
            Settled::Depends {
                policies: vec!["small".into()]
            }
        );
        // A permit that certainly applies allows unless a forbid might apply.
        let text = "@id(\"all\")\npermit (principal, action, resource);\n@id(\"big\")\nforbid (principal, action, resource) when { context.args has amount && context.args.amount > 1000 };\n";
        let p = policies(text);
        assert_eq!(
            decide(&p, "a", None, ArgsKnown::Nothing),
            Settled::Depends {
                policies: vec!["big".into()]
            }
        );
        // A forbid that might apply changes nothing when no permit could.
        let text = "@id(\"big\")\nforbid (principal, action, resource) when { context.args has amount && context.args.amount > 1000 };\n";
        assert_eq!(
            allowed(&decide(&policies(text), "a", None, ArgsKnown::Nothing)),
            Some(false)
        );
    }

    #[test]
    fn only_masked_members_are_unknown() {
        let p = policies(SMALL);
        let recorded = json!({ "amount": 500, "token": "***" });
        let s = decide(&p, "a", Some(&recorded), ArgsKnown::ExceptMasked("***"));
        assert_eq!(allowed(&s), Some(false));
        let recorded = json!({ "amount": 5, "token": "***" });
        let s = decide(&p, "a", Some(&recorded), ArgsKnown::ExceptMasked("***"));
        assert_eq!(allowed(&s), Some(true));
        let token = policies(
            "@id(\"t\")\npermit (principal, action, resource) when { context.args has token && context.args.token == \"x\" };\n",
        );
        let s = decide(&token, "a", Some(&recorded), ArgsKnown::ExceptMasked("***"));
        assert_eq!(
            s,
            Settled::Depends {
                policies: vec!["t".into()]
            }
        );
    }

    #[test]
    fn reading_is_judged_from_the_policy_text() {
        let est = |text: &str| {
            cedar_policy::Policy::parse(None, text)
                .unwrap()
                .to_json()
                .unwrap()
        };
        let members = |m: &[&str]| Unknown::Members(m.iter().map(|s| (*s).to_owned()).collect());
        let amount = est("permit (principal, action, resource) when { context.args.amount < 5 };");
        assert!(reads(&amount, &Unknown::All));
        assert!(reads(&amount, &members(&["amount"])));
        assert!(!reads(&amount, &members(&["token"])));
        let has = est("permit (principal, action, resource) when { context.args has token };");
        assert!(reads(&has, &Unknown::All));
        assert!(!reads(&has, &members(&["token"])));
        let whole = est("permit (principal, action, resource) when { context.args == {} };");
        assert!(reads(&whole, &members(&["token"])));
        assert!(!reads(&whole, &members(&[])));
        let era = est(
            "permit (principal, action, resource) when { context.era == \"modern\" && context has source };",
        );
        assert!(!reads(&era, &Unknown::All));
        let all = est("permit (principal, action, resource) when { context == {} };");
        assert!(reads(&all, &Unknown::All));
    }
}
