//! Authorization in the data plane: every use of a tool, prompt or resource is
//! decided by the Cedar policies (`crate::policy`) before anything reaches a
//! server, and discovery shows each caller only what it could use.
//!
//! Three modes. Without `auth` and without `policy` the gateway serves one local
//! user and everything is allowed. With `policy` every request is decided by it.
//! With `auth` but no `policy`, everything is denied: default deny.
//!
//! Discovery is computed once per caller per catalog snapshot and policy
//! generation (and at most a minute old): which items could this principal use
//! with *some* arguments. Calls are decided one by one, with their arguments.

use crate::auth::{ByPrincipal, Principal};
use crate::catalog::{Catalog, Item, ListKind};
use crate::config::{Config, Labels};
use crate::jsonrpc::ErrorObject;
use crate::policy::{
    self, Action, CallContext, Decision, Policies, PolicyStore, Reason, Request, ServerRef, Target,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a caller's discovery view is reused before it is decided again (so
/// time-dependent policies reach listings too).
const VIEW_TTL: Duration = Duration::from_secs(60);
/// Views kept at most; beyond it they are decided afresh.
const VIEWS_MAX: usize = 4096;

enum Mode {
    /// No authentication and no policy: the local single-user setup.
    Open,
    Enforce(Arc<PolicyStore>),
    /// Authentication without policies: nothing is allowed.
    DenyAll,
}

pub(crate) struct Authz {
    mode: Mode,
    reveal: bool,
    targets: Mutex<Option<Arc<Targets>>>,
    views: Mutex<Views>,
    _watcher: Option<policy::Watcher>,
}

/// Discovery views are per caller, endpoint, era and source address (policies
/// may read any of them).
type Views = ByPrincipal<ViewKey, Arc<View>>;

#[derive(PartialEq)]
struct ViewKey {
    endpoint: String,
    era: policy::Era,
    source: Option<std::net::IpAddr>,
}

/// A [`ViewKey`] borrowed from a request's [`Origin`]: hashes and compares
/// like the owned one.
struct ViewRef<'a> {
    endpoint: &'a str,
    era: policy::Era,
    source: Option<std::net::IpAddr>,
}

impl std::hash::Hash for ViewKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.endpoint.as_str(), self.era.as_str(), self.source).hash(h);
    }
}

impl std::hash::Hash for ViewRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.endpoint, self.era.as_str(), self.source).hash(h);
    }
}

impl PartialEq<ViewRef<'_>> for ViewKey {
    fn eq(&self, o: &ViewRef<'_>) -> bool {
        self.endpoint == o.endpoint && self.era == o.era && self.source == o.source
    }
}

impl<'a> From<&Origin<'a>> for ViewRef<'a> {
    fn from(o: &Origin<'a>) -> Self {
        ViewRef {
            endpoint: o.endpoint,
            era: o.era,
            source: o.source,
        }
    }
}

/// Cedar entities for every item of one catalog snapshot.
struct Targets {
    generation: u64,
    tools: Vec<Target>,
    prompts: Vec<Target>,
    resources: Vec<Target>,
    templates: Vec<Target>,
}

/// What one caller may see of one catalog snapshot, per list.
pub(crate) struct View {
    catalog: u64,
    policies: u64,
    made: Instant,
    tools: Vec<bool>,
    prompts: Vec<bool>,
    resources: Vec<bool>,
    templates: Vec<bool>,
}

impl View {
    pub fn of(&self, kind: ListKind) -> &[bool] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &self.templates,
        }
    }

    /// A view that is not a policy decision: an endpoint's filter of catalog
    /// `generation`, one list per kind.
    pub fn mask(generation: u64, lists: [(ListKind, Vec<bool>); 4]) -> View {
        let mut view = View {
            catalog: generation,
            policies: 0,
            made: Instant::now(),
            tools: Vec::new(),
            prompts: Vec::new(),
            resources: Vec::new(),
            templates: Vec::new(),
        };
        for (kind, list) in lists {
            *match kind {
                ListKind::Tools => &mut view.tools,
                ListKind::Prompts => &mut view.prompts,
                ListKind::Resources => &mut view.resources,
                ListKind::Templates => &mut view.templates,
            } = list;
        }
        view
    }

    /// The catalog generation this view was made for.
    pub fn catalog(&self) -> u64 {
        self.catalog
    }

    /// Whether item `index` of `kind` is visible.
    pub fn shows(&self, kind: ListKind, index: usize) -> bool {
        self.of(kind).get(index).copied().unwrap_or(false)
    }
}

/// Both lists' verdicts; `mask` may be absent (everything).
fn and(list: Vec<bool>, mask: Option<&[bool]>) -> Vec<bool> {
    match mask {
        None => list,
        Some(m) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| v && m.get(i).copied().unwrap_or(false))
            .collect(),
    }
}

/// Where a request came from, for the policy context.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub principal: &'a Principal,
    pub endpoint: &'a str,
    pub session: Option<&'a str>,
    pub era: policy::Era,
    /// The client's address, when it came over the network.
    pub source: Option<std::net::IpAddr>,
}

impl<'a> Origin<'a> {
    fn context(&self, args: Option<&'a Value>) -> CallContext<'a> {
        let mut ctx = CallContext::now(self.endpoint);
        ctx.args = args;
        ctx.source = self.source;
        ctx.session = self.session;
        ctx.era = self.era;
        ctx
    }
}

/// Denied by policy (the item exists and is visible to the caller, but this use
/// of it is not allowed).
pub const FORBIDDEN: i64 = -32040;

impl Authz {
    pub fn new(config: &Config, audit: &crate::audit::Auditor) -> Result<Authz, String> {
        let mode = match (&config.policy, &config.auth) {
            (Some(_), _) => {
                let path = config.policy_path().unwrap_or_default();
                let store = PolicyStore::open(&path).map_err(|e| e.to_string())?;
                Mode::Enforce(Arc::new(store))
            }
            (None, None) => Mode::Open,
            (None, Some(_)) => {
                tracing::warn!(
                    "authentication is configured but no policy: every request will be denied (set `policy`)"
                );
                Mode::DenyAll
            }
        };
        let watcher = match &mode {
            Mode::Enforce(store) => match store.watch_and_log(audit.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the policy files; changes need a restart");
                    None
                }
            },
            _ => None,
        };
        Ok(Authz {
            mode,
            reveal: config.policy.as_ref().is_some_and(|p| p.reveal_reasons),
            targets: Mutex::default(),
            views: Mutex::new(Views::new(VIEWS_MAX)),
            _watcher: watcher,
        })
    }

    #[cfg(test)]
    fn new_unaudited(config: &Config) -> Result<Authz, String> {
        Authz::new(config, &crate::audit::Auditor::disabled())
    }

    /// Nothing allowed: what runs when the policies could not be loaded.
    pub fn deny_all() -> Authz {
        Authz {
            mode: Mode::DenyAll,
            reveal: false,
            targets: Mutex::default(),
            views: Mutex::new(Views::new(VIEWS_MAX)),
            _watcher: None,
        }
    }

    /// Whether everyone may do everything (no views, no decisions).
    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open)
    }

    fn targets(&self, cat: &Catalog, config: &Config) -> Arc<Targets> {
        let mut slot = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref()
            && t.generation == cat.generation
        {
            return t.clone();
        }
        let none = Labels::default();
        let server = |i: &Item| {
            let name = cat.server_name(i.server);
            let labels = config.servers.get(name).map_or(&none, |s| &s.labels);
            (name, labels)
        };
        let item_labels = |i: &Item, tools: bool| {
            let name = cat.server_name(i.server);
            config.servers.get(name).and_then(|s| {
                let rules = if tools { &s.tools } else { &s.prompts };
                rules.labels.get(&i.original)
            })
        };
        let tools = cat
            .tools
            .iter()
            .map(|i| {
                let (name, labels) = server(i);
                let annotations = serde_json::from_str::<Value>(i.json.get())
                    .ok()
                    .and_then(|t| t.get("annotations").cloned());
                Target::tool(
                    ServerRef { name, labels },
                    &i.exposed,
                    &i.original,
                    item_labels(i, true),
                    annotations.as_ref(),
                )
            })
            .collect();
        let prompts = cat
            .prompts
            .iter()
            .map(|i| {
                let (name, labels) = server(i);
                Target::prompt(
                    ServerRef { name, labels },
                    &i.exposed,
                    &i.original,
                    item_labels(i, false),
                )
            })
            .collect();
        let uris = |items: &[Item]| {
            items
                .iter()
                .map(|i| {
                    let (name, labels) = server(i);
                    Target::resource(ServerRef { name, labels }, &i.exposed, &i.original)
                })
                .collect()
        };
        let t = Arc::new(Targets {
            generation: cat.generation,
            tools,
            prompts,
            resources: uris(&cat.resources),
            templates: uris(&cat.templates),
        });
        *slot = Some(t.clone());
        t
    }

    /// What `origin` may see of `cat`; `None` when everything is visible.
    /// `mask` is the endpoint's filter of `cat` (see `gateway::endpoints`): the
    /// view is the policies' verdict AND the mask, cached per endpoint.
    pub fn view(
        &self,
        cat: &Catalog,
        config: &Config,
        origin: &Origin<'_>,
        mask: Option<&View>,
    ) -> Option<Arc<View>> {
        let policies = match &self.mode {
            Mode::Open => return None,
            Mode::DenyAll => None,
            Mode::Enforce(store) => Some(store.current()),
        };
        let generation = policies.as_ref().map_or(0, |p| p.generation());
        if let Some(v) = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin.principal, &ViewRef::from(origin))
            && v.catalog == cat.generation
            && v.policies == generation
            && v.made.elapsed() < VIEW_TTL
        {
            return Some(v.clone());
        }
        let targets = self.targets(cat, config);
        let ctx = origin.context(None);
        let could = |action: Action, ts: &[Target], kind: ListKind| -> Vec<bool> {
            let verdicts = match &policies {
                None => vec![false; ts.len()],
                Some(p) => p.could_allow_each(origin.principal, action, ts, ctx),
            };
            and(verdicts, mask.map(|m| m.of(kind)))
        };
        let view = Arc::new(View {
            catalog: cat.generation,
            policies: generation,
            made: Instant::now(),
            tools: could(Action::CallTool, &targets.tools, ListKind::Tools),
            prompts: could(Action::GetPrompt, &targets.prompts, ListKind::Prompts),
            resources: could(
                Action::ReadResource,
                &targets.resources,
                ListKind::Resources,
            ),
            templates: could(
                Action::ReadResource,
                &targets.templates,
                ListKind::Templates,
            ),
        });
        self.views.lock().unwrap_or_else(|p| p.into_inner()).insert(
            origin.principal,
            ViewKey {
                endpoint: origin.endpoint.to_owned(),
                era: origin.era,
                source: origin.source,
            },
            view.clone(),
        );
        Some(view)
    }

    /// Decide one use of a catalog item (by its position in its list). A caller
    /// that could never use the item is told it does not exist (`unknown`); one
    /// that may use it, but not like this, gets [`FORBIDDEN`] with the reason.
    #[allow(clippy::too_many_arguments)]
    pub fn check_item(
        &self,
        cat: &Catalog,
        config: &Config,
        origin: &Origin<'_>,
        mask: Option<&View>,
        action: Action,
        kind: ListKind,
        index: usize,
        args: Option<&Value>,
        unknown: impl FnOnce() -> ErrorObject,
    ) -> Result<(), ErrorObject> {
        if self.is_open() {
            return Ok(());
        }
        let visible = self
            .view(cat, config, origin, mask)
            .is_some_and(|v| v.shows(kind, index));
        if !visible {
            tracing::info!(
                principal = %origin.principal.key(),
                action = action.name(),
                item = %cat.items(kind).get(index).map_or("", |i| i.exposed.as_str()),
                "denied: not visible to the caller"
            );
            super::audit::note_decision(
                false,
                Some("not_visible"),
                &[],
                Some("no policy lets the caller see it"),
            );
            return Err(unknown());
        }
        let targets = self.targets(cat, config);
        let list = match kind {
            ListKind::Tools => &targets.tools,
            ListKind::Prompts => &targets.prompts,
            ListKind::Resources => &targets.resources,
            ListKind::Templates => &targets.templates,
        };
        let Some(target) = list.get(index) else {
            return Err(unknown());
        };
        self.decide(origin, action, target, args)
    }

    /// Decide a use of an item the catalog does not list (a resource read by a
    /// URI only a template or an earlier result names).
    pub fn check_target(
        &self,
        origin: &Origin<'_>,
        action: Action,
        target: &Target,
        args: Option<&Value>,
    ) -> Result<(), ErrorObject> {
        if self.is_open() {
            return Ok(());
        }
        self.decide(origin, action, target, args)
    }

    fn decide(
        &self,
        origin: &Origin<'_>,
        action: Action,
        target: &Target,
        args: Option<&Value>,
    ) -> Result<(), ErrorObject> {
        let decision = match &self.mode {
            Mode::Open => return Ok(()),
            Mode::DenyAll => Decision {
                allowed: false,
                reason: Reason {
                    code: policy::code::NO_PERMIT,
                    policies: Vec::new(),
                    message: "no policy is configured".into(),
                },
            },
            Mode::Enforce(store) => {
                let p: Arc<Policies> = store.current();
                p.decide(&Request {
                    principal: origin.principal,
                    action,
                    target,
                    context: origin.context(args),
                })
            }
        };
        super::audit::note_decision(
            decision.allowed,
            Some(decision.reason.code),
            &decision.reason.policies,
            (!decision.allowed).then_some(decision.reason.message.as_str()),
        );
        if decision.allowed {
            return Ok(());
        }
        tracing::info!(
            principal = %origin.principal.key(),
            action = action.name(),
            target = %target.uid(),
            code = decision.reason.code,
            policies = ?decision.reason.policies,
            reason = %decision.reason.message,
            "denied by policy"
        );
        Err(
            ErrorObject::new(FORBIDDEN, format!("{} denied by policy", action.name()))
                .with_data(decision.reason.for_client(self.reveal)),
        )
    }
}

impl super::Gateway {
    /// Who asks and through what, for the policies.
    pub(crate) fn origin<'a>(&self, session: &'a super::Session) -> Origin<'a> {
        let era = match session.era {
            super::session::Era::Legacy => policy::Era::Legacy,
            super::session::Era::Modern => policy::Era::Modern,
        };
        Origin {
            principal: &session.identity,
            endpoint: &session.endpoint,
            session: (era == policy::Era::Legacy).then_some(session.id.as_str()),
            era,
            source: session.source.get().copied(),
        }
    }

    /// What `session`'s caller may see of `cat`; `None` when everything.
    pub(crate) fn view(&self, session: &super::Session, cat: &Catalog) -> Option<Arc<View>> {
        self.view_for(&self.origin(session), cat)
    }

    /// Whether the endpoint at `path` exposes item `index` of `kind` (policies
    /// aside).
    pub(crate) fn endpoint_exposes(
        &self,
        path: &str,
        cat: &Catalog,
        kind: ListKind,
        index: usize,
    ) -> bool {
        self.endpoints
            .mask(path, cat)
            .is_none_or(|m| m.shows(kind, index))
    }

    /// What `origin`'s caller may see of `cat` through its endpoint: the
    /// endpoint's filter AND the policies; `None` when everything.
    pub(crate) fn view_for(&self, origin: &Origin<'_>, cat: &Catalog) -> Option<Arc<View>> {
        let mask = self.endpoints.mask(origin.endpoint, cat);
        if self.authz.is_open() {
            return mask;
        }
        self.authz
            .view(cat, &self.config(), origin, mask.as_deref())
    }

    /// Decide one use of a listed item; see [`Authz::check_item`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn authorize_item(
        &self,
        session: &super::Session,
        cat: &Catalog,
        action: Action,
        kind: ListKind,
        index: usize,
        args: Option<&Value>,
        unknown: impl FnOnce() -> ErrorObject,
    ) -> Result<(), ErrorObject> {
        let mask = self.endpoints.mask(&session.endpoint, cat);
        // Outside the endpoint is the same as not existing, whatever the policies.
        if mask.as_ref().is_some_and(|m| !m.shows(kind, index)) {
            tracing::info!(
                principal = %session.principal,
                endpoint = %session.endpoint,
                action = action.name(),
                item = %cat.items(kind).get(index).map_or("", |i| i.exposed.as_str()),
                "denied: not exposed by the endpoint"
            );
            super::audit::note_decision(
                false,
                Some("not_exposed"),
                &[],
                Some("the endpoint does not expose it"),
            );
            return Err(unknown());
        }
        if self.authz.is_open() {
            return Ok(());
        }
        self.authz.check_item(
            cat,
            &self.config(),
            &self.origin(session),
            mask.as_deref(),
            action,
            kind,
            index,
            args,
            unknown,
        )
    }

    /// Decide a use of a resource by URI: a listed resource by its entry, any
    /// other (a template's, or one a result named) as a resource of its server.
    /// A listed resource the caller may not see is not found.
    pub(crate) fn authorize_uri(
        &self,
        origin: &Origin<'_>,
        cat: &Catalog,
        action: Action,
        server: usize,
        uri: &str,
        original: &str,
    ) -> Result<(), ErrorObject> {
        let name = self.servers.get(server).map_or("", |s| &*s.name);
        // A resource of a server the endpoint does not expose is not found there,
        // listed or not.
        if !self.endpoints.allows_server(origin.endpoint, name) {
            super::audit::note_decision(false, Some("not_exposed"), &[], None);
            return Err(super::dispatch::not_found(uri));
        }
        if let Some(index) = cat.position(ListKind::Resources, uri) {
            let visible = self
                .view_for(origin, cat)
                .is_none_or(|v| v.shows(ListKind::Resources, index));
            if !visible {
                super::audit::note_decision(false, Some("not_visible"), &[], None);
                return Err(super::dispatch::not_found(uri));
            }
        }
        if self.authz.is_open() {
            return Ok(());
        }
        let none = Labels::default();
        let config = self.config();
        let labels = config.servers.get(name).map_or(&none, |s| &s.labels);
        let target = Target::resource(ServerRef { name, labels }, uri, original);
        self.authz.check_target(origin, action, &target, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_auth_and_policy() {
        let open = crate::config::load_str("servers: {}\n", "t.yaml", false).unwrap();
        assert!(Authz::new_unaudited(&open).unwrap().is_open());
        let auth_only =
            crate::config::load_str("auth:\n  api_keys: {}\nservers: {}\n", "t.yaml", false)
                .unwrap();
        let a = Authz::new_unaudited(&auth_only).unwrap();
        assert!(!a.is_open());
        let p = Principal::anonymous("alice");
        let origin = Origin {
            principal: &p,
            endpoint: "/mcp",
            session: None,
            era: policy::Era::Legacy,
            source: None,
        };
        let none = Labels::default();
        let target = Target::server(ServerRef {
            name: "s",
            labels: &none,
        });
        let e = a
            .check_target(&origin, Action::ListTools, &target, None)
            .unwrap_err();
        assert_eq!(e.code, FORBIDDEN);
        assert_eq!(e.data.unwrap()["code"], "no_permit");
        let missing =
            crate::config::load_str("policy:\n  path: /nonexistent/policies\n", "t.yaml", false)
                .unwrap();
        assert!(Authz::new_unaudited(&missing).is_err());
    }
}
