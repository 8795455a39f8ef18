//! Slicing: a request is evaluated only against the policies whose scope could
//! match it.
//!
//! Cedar evaluates every policy of the set it is given, so with hundreds of
//! policies most of the cost is scopes that cannot match (another tool, another
//! server). At load each policy is filed by the actions its scope admits and by
//! its resource constraint:
//!
//! - *by type* (`resource`, `resource is Tool`): every request of that action
//!   and resource type;
//! - *own* (`== U`, `in U`, `is T in U`): requests whose resource is `U`;
//! - *under* (`in U`, `is T in U`): requests whose resource's server is `U`
//!   (stored already merged with the by-type slice, so the common request
//!   evaluates one set).
//!
//! The slicing is exact in one direction: a policy left out of a request's
//! slices has a scope that is false for that request, so leaving it out
//! changes neither the decision nor the errors.
//!
//! Each slice is also split by whether its policies read `context`: those that
//! do not decide the same way for a principal, action and resource whatever
//! the call's arguments, time or address, so their outcome can be remembered
//! (`Policies::decide`); the others are evaluated on every call, with only the
//! context attributes they read.

use super::Action;
use super::entities::TargetKind;
use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, ResourceConstraint};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Slices {
    by_type: HashMap<(Action, TargetKind), Arc<Slice>>,
    own: HashMap<Action, HashMap<EntityUid, Arc<Slice>>>,
    under: HashMap<(Action, TargetKind), HashMap<EntityUid, Arc<Slice>>>,
}

/// The policies a request meets in one place, split by whether they read the
/// request's context.
pub(crate) struct Slice {
    pub all: PolicySet,
    /// Policies that never read `context` (empty if none).
    pub fixed: PolicySet,
    /// Policies that do.
    pub reading: PolicySet,
    /// What of the context `reading` reads.
    pub reads: Reads,
}

/// Which context attributes some policies read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Reads {
    /// These attributes only (`context.NAME`, `context has NAME`).
    #[default]
    None,
    Attrs(BTreeSet<String>),
    /// The context as a whole (or policies this analysis cannot read).
    All,
}

impl Reads {
    /// Whether attribute `name` must be in the context.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            Reads::None => false,
            Reads::Attrs(names) => names.contains(name),
            Reads::All => true,
        }
    }

    pub fn add(&mut self, other: &Reads) {
        match (&mut *self, other) {
            (_, Reads::None) | (Reads::All, _) => {}
            (_, Reads::All) => *self = Reads::All,
            (Reads::None, Reads::Attrs(b)) => *self = Reads::Attrs(b.clone()),
            (Reads::Attrs(a), Reads::Attrs(b)) => a.extend(b.iter().cloned()),
        }
    }

    /// What `policy` reads of the context, from its JSON form.
    pub fn of(policy: &Policy) -> Reads {
        let Ok(json) = policy.to_json() else {
            return Reads::All;
        };
        let mut reads = Reads::None;
        walk(&json, &mut reads);
        reads
    }
}

/// Collect the context attributes `expr` reads: `context` is read through
/// `.` and `has` by name; anywhere else it is read whole.
fn walk(expr: &Value, reads: &mut Reads) {
    match expr {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "Var" && value.as_str() == Some("context") {
                    *reads = Reads::All;
                    return;
                }
                if (key == "." || key == "has")
                    && value
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context")
                    && let Some(attr) = value.get("attr").and_then(Value::as_str)
                {
                    reads.add(&Reads::Attrs(BTreeSet::from([attr.to_owned()])));
                    continue;
                }
                walk(value, reads);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, reads)),
        _ => {}
    }
}

impl Slice {
    fn new(list: Vec<&Policy>) -> Slice {
        let mut fixed = Vec::new();
        let mut reading = Vec::new();
        let mut reads = Reads::None;
        for p in &list {
            let r = Reads::of(p);
            if r == Reads::None {
                fixed.push(*p);
            } else {
                reads.add(&r);
                reading.push(*p);
            }
        }
        let set =
            |l: Vec<&Policy>| PolicySet::from_policies(l.into_iter().cloned()).unwrap_or_default();
        Slice {
            all: set(list),
            fixed: set(fixed),
            reading: set(reading),
            reads,
        }
    }
}

impl Slices {
    pub fn build(set: &PolicySet, groups: &HashMap<EntityUid, Vec<Action>>) -> Slices {
        let mut by_type: HashMap<(Action, TargetKind), Vec<&Policy>> = HashMap::new();
        let mut own: HashMap<(Action, EntityUid), Vec<&Policy>> = HashMap::new();
        let mut under: HashMap<(Action, TargetKind, EntityUid), Vec<&Policy>> = HashMap::new();
        for policy in set.policies() {
            let actions: Vec<Action> = match policy.action_constraint() {
                ActionConstraint::Any => Action::ALL.to_vec(),
                ActionConstraint::Eq(a) => Action::from_uid(&a).into_iter().collect(),
                ActionConstraint::In(list) => {
                    let mut out: Vec<Action> = Vec::new();
                    for a in &list {
                        out.extend(Action::from_uid(a));
                        out.extend(groups.get(a).into_iter().flatten().copied());
                    }
                    out.sort_unstable();
                    out.dedup();
                    out
                }
            };
            let resource = policy.resource_constraint();
            for action in actions {
                for &kind in action.resource_kinds() {
                    let ty = kind.entity_type();
                    match &resource {
                        ResourceConstraint::Any => {
                            by_type.entry((action, kind)).or_default().push(policy)
                        }
                        ResourceConstraint::Is(t) if t == ty => {
                            by_type.entry((action, kind)).or_default().push(policy);
                        }
                        ResourceConstraint::Is(_) => {}
                        ResourceConstraint::Eq(u) => {
                            if u.type_name() == ty {
                                own.entry((action, u.clone())).or_default().push(policy);
                            }
                        }
                        ResourceConstraint::In(u) => {
                            if u.type_name() == ty {
                                own.entry((action, u.clone())).or_default().push(policy);
                            } else {
                                under
                                    .entry((action, kind, u.clone()))
                                    .or_default()
                                    .push(policy);
                            }
                        }
                        ResourceConstraint::IsIn(t, u) if t == ty => {
                            if u.type_name() == ty {
                                own.entry((action, u.clone())).or_default().push(policy);
                            } else {
                                under
                                    .entry((action, kind, u.clone()))
                                    .or_default()
                                    .push(policy);
                            }
                        }
                        ResourceConstraint::IsIn(..) => {}
                    }
                }
            }
        }
        for own_list in own.values_mut() {
            dedup(own_list);
        }
        let to_set = |list: Vec<&Policy>| Arc::new(Slice::new(list));
        let mut under_sets: HashMap<(Action, TargetKind), HashMap<EntityUid, Arc<Slice>>> =
            HashMap::new();
        for ((a, k, u), mut list) in under {
            list.extend(by_type.get(&(a, k)).into_iter().flatten().copied());
            dedup(&mut list);
            under_sets
                .entry((a, k))
                .or_default()
                .insert(u, to_set(list));
        }
        let mut own_sets: HashMap<Action, HashMap<EntityUid, Arc<Slice>>> = HashMap::new();
        for ((a, u), list) in own {
            own_sets.entry(a).or_default().insert(u, to_set(list));
        }
        Slices {
            by_type: by_type
                .into_iter()
                .map(|(k, mut list)| {
                    dedup(&mut list);
                    (k, to_set(list))
                })
                .collect(),
            own: own_sets,
            under: under_sets,
        }
    }

    /// The (at most two, disjoint) slices a request must be evaluated against.
    pub fn for_request(
        &self,
        action: Action,
        kind: TargetKind,
        resource: &EntityUid,
        server: Option<&EntityUid>,
    ) -> [Option<&Slice>; 2] {
        let base = server
            .and_then(|s| self.under.get(&(action, kind))?.get(s))
            .or_else(|| self.by_type.get(&(action, kind)));
        let own = self.own.get(&action).and_then(|m| m.get(resource));
        [base.map(Arc::as_ref), own.map(Arc::as_ref)]
    }

    /// How many policies the largest slice holds (for `policy check`).
    pub fn largest(&self) -> usize {
        self.by_type
            .values()
            .chain(self.own.values().flat_map(HashMap::values))
            .chain(self.under.values().flat_map(HashMap::values))
            .map(|s| s.all.num_of_policies())
            .max()
            .unwrap_or(0)
    }
}

fn dedup(list: &mut Vec<&Policy>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|p| seen.insert(p.id().clone()));
}

/// Concrete actions in each action group, from the schema's action hierarchy.
pub(crate) fn action_groups(schema: &cedar_policy::Schema) -> HashMap<EntityUid, Vec<Action>> {
    let mut groups: HashMap<EntityUid, Vec<Action>> = HashMap::new();
    let Ok(actions) = schema.action_entities() else {
        return groups;
    };
    for action in Action::ALL {
        if let Some(ancestors) = actions.ancestors(action.uid()) {
            for group in ancestors {
                groups.entry(group.clone()).or_default().push(action);
            }
        }
    }
    groups
}
