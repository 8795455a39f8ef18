//! Authorization: who may do what, decided by Cedar policies, default deny.
//!
//! The dispatcher asks [`Policies::decide`] before every use of an item (a tool
//! call, a prompt, a resource read) and [`Policies::could_allow`] when it builds
//! a list, so a client sees only what it could use. Policies are validated
//! strictly against the published schema (`toolgate.cedarschema`) when loaded,
//! and a decision fails closed: a policy that errors while it could have
//! mattered denies (code `policy_error`).
//!
//! Per call the work is the principal's entity and the context; the resource's
//! entities are built once per catalog snapshot ([`Target`]), and only the
//! policies whose scope could match are evaluated (`slice.rs`).
//! [`PolicyStore`] holds the current set for hot reload.

pub mod cli;
mod entities;
mod load;
mod partial;
mod schema;
pub mod simulate;
mod slice;
mod store;
mod targets;
mod values;

pub use entities::{CallContext, Era, ServerRef, Target, TargetKind};
pub use partial::{ArgsKnown, Settled};
pub use schema::{NAMESPACE, SCHEMA};
pub use store::{PolicyStore, Reloaded, Watcher};
pub use targets::CatalogTargets;

use crate::auth::{ByPrincipal, Principal};
use cedar_policy::{Authorizer, Effect, EntityUid, PolicyId, PolicySet, Response};
use entities::ArgsMode;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use values::Mapper;

/// What a request wants to do. Each applies to one kind of resource (see the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    CallTool,
    GetPrompt,
    ReadResource,
    Subscribe,
    Complete,
    ListTools,
    ListPrompts,
    ListResources,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::CallTool,
        Action::GetPrompt,
        Action::ReadResource,
        Action::Subscribe,
        Action::Complete,
        Action::ListTools,
        Action::ListPrompts,
        Action::ListResources,
    ];

    /// The action's id in policies: `Toolgate::Action::"call_tool"`.
    pub fn name(self) -> &'static str {
        match self {
            Action::CallTool => "call_tool",
            Action::GetPrompt => "get_prompt",
            Action::ReadResource => "read_resource",
            Action::Subscribe => "subscribe",
            Action::Complete => "complete",
            Action::ListTools => "list_tools",
            Action::ListPrompts => "list_prompts",
            Action::ListResources => "list_resources",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The kinds of resource this action applies to.
    pub fn resource_kinds(self) -> &'static [TargetKind] {
        match self {
            Action::CallTool => &[TargetKind::Tool],
            Action::GetPrompt => &[TargetKind::Prompt],
            Action::ReadResource | Action::Subscribe => &[TargetKind::Resource],
            Action::Complete => &[TargetKind::Prompt, TargetKind::Resource],
            Action::ListTools | Action::ListPrompts | Action::ListResources => {
                &[TargetKind::Server]
            }
        }
    }

    pub(crate) fn uid(self) -> &'static EntityUid {
        static UIDS: LazyLock<Vec<EntityUid>> = LazyLock::new(|| {
            Action::ALL
                .iter()
                .map(|a| entities::uid("Action", a.name()))
                .collect()
        });
        &UIDS[self as usize]
    }

    fn from_uid(uid: &EntityUid) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.uid() == uid)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One authorization question: may `principal` do `action` on `target`, now,
/// in this context?
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub action: Action,
    pub target: &'a Target,
    pub context: CallContext<'a>,
}

/// The answer, with its reason. Denials are the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// Why: a stable code, the policies that decided, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reason {
    /// One of [`code`]'s constants.
    pub code: &'static str,
    /// Ids of the deciding policies: the permits that allowed, the forbids that
    /// denied, or the policies that failed.
    pub policies: Vec<String>,
    pub message: String,
}

/// Stable reason codes (they appear in errors to clients and in the audit trail).
pub mod code {
    /// A permit matched and no forbid did.
    pub const ALLOWED: &str = "allowed";
    /// No permit matched: the default.
    pub const NO_PERMIT: &str = "no_permit";
    /// A forbid matched.
    pub const FORBIDDEN: &str = "forbidden";
    /// A policy that could have mattered could not be evaluated (a type error,
    /// a missing attribute, an argument Cedar cannot represent): denied.
    pub const POLICY_ERROR: &str = "policy_error";
}

impl Reason {
    /// What a client is told: the code always; the policies and message only
    /// when the operator chose to reveal them (`policy.reveal_reasons`).
    pub fn for_client(&self, reveal: bool) -> serde_json::Value {
        if reveal {
            serde_json::json!({ "code": self.code, "policies": self.policies, "message": self.message })
        } else {
            serde_json::json!({ "code": self.code })
        }
    }
}

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

/// One thing wrong with a policy file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The policy's id, when the problem is in one policy.
    pub policy: Option<String>,
    pub message: String,
}

impl Problem {
    fn at(file: &Path, line: usize, column: usize, message: String) -> Problem {
        Problem {
            file: file.to_owned(),
            line: Some(line),
            column: Some(column),
            policy: None,
            message,
        }
    }

    fn in_file(file: &Path, message: String) -> Problem {
        Problem {
            file: file.to_owned(),
            line: None,
            column: None,
            policy: None,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(p) = &self.policy {
            write!(f, "policy `{p}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A loaded, validated, sliced policy set. Immutable; reloading builds a new one.
pub struct Policies {
    all: PolicySet,
    slices: slice::Slices,
    effects: HashMap<PolicyId, Effect>,
    origins: HashMap<PolicyId, load::Origin>,
    schema: schema::Effective,
    warnings: Vec<String>,
    digest: [u8; 32],
    generation: u64,
    authorizer: Authorizer,
    /// Principals' entities, built once per principal for this set.
    principals: Mutex<ByPrincipal<(), Arc<PreparedPrincipal>>>,
    /// What the policies that do not read the context found, by principal,
    /// action and target (see [`Policies::decide`]).
    fixed: Mutex<HashMap<FixedKey, Arc<Fixed>>>,
}

/// A principal as this policy set's requests carry it.
struct PreparedPrincipal {
    entity: cedar_policy::Entity,
    /// Attribute values that became unknowns, for a `policy_error` message.
    unrepresentable: Vec<String>,
    /// Unique in the process: a prepared principal's key in `fixed`.
    serial: u64,
}

/// Principals whose entities are kept per policy set; beyond it they are built afresh.
const PRINCIPALS_MAX: usize = 4096;

/// (principal, action, target) outcomes kept per policy set; beyond it the
/// memo starts over.
const FIXED_MAX: usize = 4096;

/// A prepared principal's serial, the action, and the target's serial.
type FixedKey = (u64, Action, u64);

/// The outcome of a request's context-free policies, and the request's
/// entities for evaluating the others.
struct Fixed {
    found: Found,
    entities: cedar_policy::Entities,
}

static SERIALS: AtomicU64 = AtomicU64::new(1);

/// A number no other call of this function in the process returns.
pub(crate) fn serial() -> u64 {
    SERIALS.fetch_add(1, Ordering::Relaxed)
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("policies", &self.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What evaluating a request's slices found.
#[derive(Default, Clone)]
struct Found {
    permits: Vec<String>,
    forbids: Vec<String>,
    errored_permits: Vec<String>,
    errored_forbids: Vec<String>,
    errors: Vec<String>,
    /// Partial evaluation only: policies whose outcome depends on the unknowns.
    residual_permits: Vec<String>,
    residual_forbids: Vec<String>,
}

impl Policies {
    /// Every `*.cedar` file of a directory (with its `*.cedarschema`
    /// declarations), or one `.cedar` file; parsed and strictly validated.
    pub fn load(path: &Path) -> Result<Policies, PolicyError> {
        Ok(Policies::from_loaded(load::load(path)?))
    }

    /// Policies from text, as if read from `file` (for tests and tools).
    pub fn from_text(file: &str, text: &str) -> Result<Policies, PolicyError> {
        Ok(Policies::from_loaded(load::compile(
            &[(PathBuf::from(file), text.to_owned())],
            &[],
        )?))
    }

    /// Policies from (file name, text) pairs, with `*.cedarschema`
    /// declarations given the same way: what [`Policies::load`] does after
    /// reading the files.
    pub fn compile(
        policy_files: &[(PathBuf, String)],
        declarations: &[(PathBuf, String)],
    ) -> Result<Policies, PolicyError> {
        Ok(Policies::from_loaded(load::compile(
            policy_files,
            declarations,
        )?))
    }

    fn from_loaded(l: load::Loaded) -> Policies {
        let groups = slice::action_groups(&l.schema.schema);
        let slices = slice::Slices::build(&l.set, &groups);
        let effects = l
            .set
            .policies()
            .map(|p| (p.id().clone(), p.effect()))
            .collect();
        Policies {
            all: l.set,
            slices,
            effects,
            origins: l.origins,
            schema: l.schema,
            warnings: l.warnings,
            digest: l.digest,
            generation: 0,
            authorizer: Authorizer::new(),
            principals: Mutex::new(ByPrincipal::new(PRINCIPALS_MAX)),
            fixed: Mutex::default(),
        }
    }

    /// Number of policies, toolgate's built-in one included.
    pub fn len(&self) -> usize {
        self.all.num_of_policies()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which reload produced this set (0 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Validator warnings (e.g. a policy that can never apply), located.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The schema in force, with this directory's declarations, as Cedar text.
    pub fn schema_text(&self) -> Result<String, String> {
        self.schema.to_cedarschema()
    }

    /// `file:line` of a policy, for people.
    pub fn origin(&self, id: &str) -> Option<String> {
        self.origins
            .get(&PolicyId::new(id))
            .map(|o| format!("{}:{}", o.file.display(), o.line))
    }

    /// Size of the largest slice: the most policies one request can meet.
    pub fn largest_slice(&self) -> usize {
        self.slices.largest()
    }

    /// Decide a request. Default deny; fail closed.
    ///
    /// Policies that never read `context` find the same for a principal,
    /// action and target on every call: what they found is remembered for
    /// this policy set (a target rebuilt with a new catalog is a new key).
    /// Only the policies that read the context are evaluated per call, with
    /// only the attributes they read.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let slices = self.slices_for(req);
        if slices.iter().all(Option::is_none) {
            return verdict(Found::default());
        }
        let principal = self.principal(req.principal);
        let Some(fixed) = self.fixed(req, &principal, slices) else {
            return internal_error();
        };
        let mut found = fixed.found.clone();
        let mut mapper = Mapper::default();
        mapper
            .unrepresentable
            .extend(principal.unrepresentable.iter().cloned());
        let reading = slices.iter().flatten().filter(|s| !s.reading.is_empty());
        if reading.clone().next().is_some() {
            let wants = |name: &str| reading.clone().any(|s| s.reads.wants(name));
            let mut ctx = req.context;
            let args = wants("args")
                .then(|| self.conform_args(req, &mut mapper))
                .flatten();
            if let Some(a) = &args {
                ctx.args = Some(a);
            }
            let context = entities::context(&ctx, ArgsMode::Given, &wants, &mut mapper);
            let Some(request) = cedar_request(req, principal.entity.uid(), context) else {
                return internal_error();
            };
            for s in reading {
                let r = self
                    .authorizer
                    .is_authorized(&request, &s.reading, &fixed.entities);
                self.response_into(&r, &mut found);
            }
        }
        let mut decision = verdict(found);
        if decision.reason.code == code::POLICY_ERROR && !mapper.unrepresentable.is_empty() {
            decision.reason.message = format!(
                "{}; values policies cannot read were given as unknown ({})",
                decision.reason.message,
                mapper.unrepresentable.join(", ")
            );
        }
        decision
    }

    /// What the request's context-free policies find, and its entities:
    /// evaluated once per principal, action and target, then remembered.
    fn fixed(
        &self,
        req: &Request<'_>,
        principal: &PreparedPrincipal,
        slices: [Option<&slice::Slice>; 2],
    ) -> Option<Arc<Fixed>> {
        let key = (principal.serial, req.action, req.target.serial());
        let memo = || self.fixed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = memo().get(&key) {
            return Some(found.clone());
        }
        let entities = request_entities(req, &principal.entity)?;
        let mut found = Found::default();
        let fixed_sets = slices.iter().flatten().filter(|s| !s.fixed.is_empty());
        let mut fixed_sets = fixed_sets.peekable();
        if fixed_sets.peek().is_some() {
            // These policies read no context: an empty one is the same to them.
            let request =
                cedar_request(req, principal.entity.uid(), cedar_policy::Context::empty())?;
            for s in fixed_sets {
                let r = self.authorizer.is_authorized(&request, &s.fixed, &entities);
                self.response_into(&r, &mut found);
            }
        }
        let fixed = Arc::new(Fixed { found, entities });
        let mut memo = memo();
        if memo.len() >= FIXED_MAX {
            memo.clear();
        }
        memo.insert(key, fixed.clone());
        Some(fixed)
    }

    /// The principal's entity for this policy set: its attributes conformed to
    /// the declared types, built once per principal and reused by every call.
    fn principal(&self, p: &Principal) -> Arc<PreparedPrincipal> {
        let cache = || self.principals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache().get(p, &()) {
            return found.clone();
        }
        let mut mapper = Mapper::default();
        let conformed = self
            .schema
            .conform("Attrs", &p.attrs)
            .map(|(attrs, notes)| {
                mapper.unrepresentable.extend(notes);
                Principal { attrs, ..p.clone() }
            });
        let entity = entities::principal_entity(conformed.as_ref().unwrap_or(p), &mut mapper);
        let prepared = Arc::new(PreparedPrincipal {
            entity,
            unrepresentable: mapper.unrepresentable,
            serial: serial(),
        });
        cache().insert(p, (), prepared.clone());
        prepared
    }

    /// The arguments as policies get them, when any had to change (see
    /// [`Policies::conform`]).
    fn conform_args(&self, req: &Request<'_>, mapper: &mut Mapper) -> Option<serde_json::Value> {
        let serde_json::Value::Object(map) = req.context.args? else {
            return None;
        };
        let (a, notes) = self.schema.conform("Args", map)?;
        mapper.unrepresentable.extend(notes);
        Some(serde_json::Value::Object(a))
    }

    /// Values of another type than declared become unknowns (deny, never a
    /// comparison that silently fails to match): the principal's attributes
    /// and the arguments as policies get them, when any had to change.
    fn conform(&self, req: &Request<'_>, mapper: &mut Mapper) -> Conformed {
        let mut fixed = Conformed::default();
        if let Some((attrs, notes)) = self.schema.conform("Attrs", &req.principal.attrs) {
            let mut p = req.principal.clone();
            p.attrs = attrs;
            fixed.principal = Some(p);
            mapper.unrepresentable.extend(notes);
        }
        fixed.args = self.conform_args(req, mapper);
        fixed
    }

    /// [`Policies::decide`] without slicing: the whole set in one Cedar
    /// evaluation. The baseline of the benchmark and of the slicing test.
    #[doc(hidden)]
    pub fn decide_unsliced(&self, req: &Request<'_>) -> Decision {
        let mut mapper = Mapper::default();
        let principal = entities::principal_entity(req.principal, &mut mapper);
        let context = entities::context(&req.context, ArgsMode::Given, &|_| true, &mut mapper);
        let Some(entities) = request_entities(req, &principal) else {
            return internal_error();
        };
        let Some(request) = cedar_request(req, principal.uid(), context) else {
            return internal_error();
        };
        let r = self
            .authorizer
            .is_authorized(&request, &self.all, &entities);
        let mut found = Found::default();
        self.response_into(&r, &mut found);
        verdict(found)
    }

    /// Could this principal be allowed this action on this target with *some*
    /// arguments? `req.context.args` is ignored: the arguments are an unknown,
    /// and Cedar's partial evaluation leaves every policy that reads them
    /// undecided. Listed iff no forbid certainly applies (or certainly fails),
    /// and some permit applies or might, depending on the arguments. It may
    /// list a tool whose argument conditions no call can meet, and it never
    /// hides one that some call could use.
    pub fn could_allow(&self, req: &Request<'_>) -> bool {
        if self.slices_for(req).iter().all(Option::is_none) {
            return false;
        }
        // Decided for every argument: that decision. Depending on the
        // arguments: some would be allowed, so the item is listed. (Everything
        // else in the context — source, time, endpoint — is known and counts.)
        match self.decide_partly(req, partial::ArgsKnown::Nothing) {
            partial::Settled::Decided(d) => d.allowed,
            partial::Settled::Depends { .. } => true,
        }
    }

    /// [`Policies::could_allow`] for each of `targets`, by one principal with
    /// one context: what depends only on those (the principal's entity, the
    /// context) is built once, not once per target — a caller's first list
    /// decides every item of the catalog.
    pub fn could_allow_each<'t>(
        &self,
        principal: &Principal,
        action: Action,
        targets: impl IntoIterator<Item = &'t Target>,
        context: CallContext<'_>,
    ) -> Vec<bool> {
        let mut prepared = None;
        targets
            .into_iter()
            .map(|target| {
                let req = Request {
                    principal,
                    action,
                    target,
                    context,
                };
                if self.slices_for(&req).iter().all(Option::is_none) {
                    return false;
                }
                let p = prepared
                    .get_or_insert_with(|| self.prepare_partly(&req, partial::ArgsKnown::Nothing));
                match self.decide_prepared(&req, p) {
                    partial::Settled::Decided(d) => d.allowed,
                    partial::Settled::Depends { .. } => true,
                }
            })
            .collect()
    }

    /// Evaluate a request's slices partially: permits and forbids that depend
    /// on unknowns are residuals.
    fn evaluate_partly(
        &self,
        req: &Request<'_>,
        principal: cedar_policy::Entity,
        context: cedar_policy::Context,
    ) -> Option<Found> {
        let slices = self.slices_for(req);
        let mut found = Found::default();
        if slices.iter().all(Option::is_none) {
            return Some(found);
        }
        let entities = request_entities(req, &principal)?;
        let request = cedar_request(req, principal.uid(), context)?;
        for s in slices.into_iter().flatten() {
            self.partial_into(&request, &s.all, &entities, &mut found);
        }
        Some(found)
    }

    fn slices_for(&self, req: &Request<'_>) -> [Option<&slice::Slice>; 2] {
        let t = req.target;
        self.slices
            .for_request(req.action, t.kind(), t.uid(), t.server_uid())
    }

    fn response_into(&self, r: &Response, found: &mut Found) {
        for id in r.diagnostics().reason() {
            match self.effects.get(id) {
                Some(Effect::Forbid) => found.forbids.push(id.to_string()),
                _ => found.permits.push(id.to_string()),
            }
        }
        for e in r.diagnostics().errors() {
            let id = match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => e.policy_id(),
            };
            match self.effects.get(id) {
                Some(Effect::Permit) => found.errored_permits.push(id.to_string()),
                // An error in a policy of unknown effect is treated as a forbid's.
                _ => found.errored_forbids.push(id.to_string()),
            }
            found.errors.push(load::chain(e));
        }
    }

    fn partial_into(
        &self,
        request: &cedar_policy::Request,
        set: &PolicySet,
        entities: &cedar_policy::Entities,
        found: &mut Found,
    ) {
        let r = self
            .authorizer
            .is_authorized_partial(request, set, entities);
        for p in r.definitely_satisfied() {
            match p.effect() {
                Effect::Forbid => found.forbids.push(p.id().to_string()),
                Effect::Permit => found.permits.push(p.id().to_string()),
            }
        }
        for id in r.definitely_errored() {
            match self.effects.get(id) {
                Some(Effect::Permit) => found.errored_permits.push(id.to_string()),
                _ => found.errored_forbids.push(id.to_string()),
            }
        }
        for p in r.nontrivial_residuals() {
            match p.effect() {
                Effect::Permit => found.residual_permits.push(p.id().to_string()),
                Effect::Forbid => found.residual_forbids.push(p.id().to_string()),
            }
        }
    }
}

/// The principal and arguments of a request after [`Policies::conform`];
/// `None` where nothing had to change.
#[derive(Default)]
struct Conformed {
    principal: Option<Principal>,
    args: Option<serde_json::Value>,
}

/// The Cedar request of `req` by `principal` (no schema check: the policies
/// were validated against it at load).
fn cedar_request(
    req: &Request<'_>,
    principal: EntityUid,
    context: cedar_policy::Context,
) -> Option<cedar_policy::Request> {
    cedar_policy::Request::new(
        principal,
        req.action.uid().clone(),
        req.target.uid().clone(),
        context,
        None,
    )
    .ok()
}

/// The target's prebuilt entities with the principal and the action added.
fn request_entities(
    req: &Request<'_>,
    principal: &cedar_policy::Entity,
) -> Option<cedar_policy::Entities> {
    req.target
        .entities()
        .clone()
        .add_entities(
            [
                principal.clone(),
                entities::action_entity(req.action).clone(),
            ],
            None,
        )
        .ok()
}

/// Combine what the slices found into a decision, the way Cedar combines one
/// set, with one difference: an error in a policy that could have changed the
/// outcome denies instead of being skipped.
fn verdict(mut f: Found) -> Decision {
    for list in [
        &mut f.permits,
        &mut f.forbids,
        &mut f.errored_permits,
        &mut f.errored_forbids,
    ] {
        list.sort();
        list.dedup();
    }
    let deny = |code: &'static str, policies: Vec<String>, message: String| Decision {
        allowed: false,
        reason: Reason {
            code,
            policies,
            message,
        },
    };
    if !f.forbids.is_empty() {
        let message = format!("forbidden by {}", f.forbids.join(", "));
        return deny(code::FORBIDDEN, f.forbids, message);
    }
    if !f.errored_forbids.is_empty() {
        // Skipping a forbid that failed would let the call through on exactly
        // the input the forbid was written against (`"amount": "5000"`).
        let message = format!(
            "a forbid policy could not be evaluated, so the call is denied: {}",
            f.errors.join("; ")
        );
        return deny(code::POLICY_ERROR, f.errored_forbids, message);
    }
    if !f.permits.is_empty() {
        let message = format!("permitted by {}", f.permits.join(", "));
        return Decision {
            allowed: true,
            reason: Reason {
                code: code::ALLOWED,
                policies: f.permits,
                message,
            },
        };
    }
    if !f.errored_permits.is_empty() {
        let message = format!(
            "no permit applied, and a permit that might have could not be evaluated: {}",
            f.errors.join("; ")
        );
        return deny(code::POLICY_ERROR, f.errored_permits, message);
    }
    deny(code::NO_PERMIT, Vec::new(), "no policy permits this".into())
}

fn internal_error() -> Decision {
    Decision {
        allowed: false,
        reason: Reason {
            code: code::POLICY_ERROR,
            policies: Vec::new(),
            message: "the request could not be put to the policies".into(),
        },
    }
}

#[cfg(test)]
mod tests;
