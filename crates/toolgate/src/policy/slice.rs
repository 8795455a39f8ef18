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

use super::Action;
use super::entities::TargetKind;
use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, ResourceConstraint};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Slices {
    by_type: HashMap<(Action, TargetKind), Arc<PolicySet>>,
    own: HashMap<Action, HashMap<EntityUid, Arc<PolicySet>>>,
    under: HashMap<(Action, TargetKind), HashMap<EntityUid, Arc<PolicySet>>>,
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
        let to_set = |list: Vec<&Policy>| {
            Arc::new(PolicySet::from_policies(list.into_iter().cloned()).unwrap_or_default())
        };
        let mut under_sets: HashMap<(Action, TargetKind), HashMap<EntityUid, Arc<PolicySet>>> =
            HashMap::new();
        for ((a, k, u), mut list) in under {
            list.extend(by_type.get(&(a, k)).into_iter().flatten().copied());
            dedup(&mut list);
            under_sets
                .entry((a, k))
                .or_default()
                .insert(u, to_set(list));
        }
        let mut own_sets: HashMap<Action, HashMap<EntityUid, Arc<PolicySet>>> = HashMap::new();
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

    /// The (at most two, disjoint) policy sets a request must be evaluated against.
    pub fn for_request(
        &self,
        action: Action,
        kind: TargetKind,
        resource: &EntityUid,
        server: Option<&EntityUid>,
    ) -> [Option<&PolicySet>; 2] {
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
            .map(|s| s.num_of_policies())
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
