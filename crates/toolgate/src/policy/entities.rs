//! The Cedar side of a request: the resource (built once per catalog snapshot),
//! the principal and the context (built per call, the only per-call work).

use super::values::Mapper;
use crate::auth::{AuthMethod, Principal};
use crate::config::Labels;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// What kind of item a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Server,
    Tool,
    Prompt,
    Resource,
}

impl TargetKind {
    pub const ALL: [TargetKind; 4] = [
        TargetKind::Server,
        TargetKind::Tool,
        TargetKind::Prompt,
        TargetKind::Resource,
    ];

    pub fn type_name(self) -> &'static str {
        match self {
            TargetKind::Server => "Server",
            TargetKind::Tool => "Tool",
            TargetKind::Prompt => "Prompt",
            TargetKind::Resource => "Resource",
        }
    }

    pub(crate) fn entity_type(self) -> &'static EntityTypeName {
        static TYPES: LazyLock<[EntityTypeName; 4]> =
            LazyLock::new(|| TargetKind::ALL.map(|k| type_name(k.type_name())));
        &TYPES[self as usize]
    }
}

/// A `Toolgate::` type name. Parsing one runs Cedar's parser, so the known
/// ones are parsed once.
pub(crate) fn type_name(name: &str) -> EntityTypeName {
    const KNOWN: [&str; 8] = [
        "User", "Group", "Tenant", "Server", "Tool", "Prompt", "Resource", "Action",
    ];
    static PARSED: LazyLock<Vec<EntityTypeName>> =
        LazyLock::new(|| KNOWN.iter().map(|n| parse_type_name(n)).collect());
    match KNOWN.iter().position(|k| *k == name) {
        Some(i) => PARSED[i].clone(),
        None => parse_type_name(name),
    }
}

fn parse_type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(&format!("{}::{name}", super::schema::NAMESPACE))
        .unwrap_or_else(|e| unreachable!("`{name}` is a valid type name: {e}"))
}

pub(crate) fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

/// A server as policies see it: its name and the labels from the config.
#[derive(Debug, Clone, Copy)]
pub struct ServerRef<'a> {
    pub name: &'a str,
    pub labels: &'a Labels,
}

/// The resource of a request — a server, or a tool, prompt or resource within
/// one — with its Cedar entities prebuilt. Build these once per catalog
/// snapshot; a request only borrows one.
#[derive(Debug, Clone)]
pub struct Target {
    kind: TargetKind,
    uid: EntityUid,
    server: Option<EntityUid>,
    entities: Entities,
    /// Unique in the process (shared by clones, which are the same target):
    /// what decisions remembered for this target are filed under.
    serial: u64,
}

impl Target {
    pub fn server(server: ServerRef<'_>) -> Target {
        let entity = server_entity(server);
        Target {
            kind: TargetKind::Server,
            uid: entity.uid(),
            server: None,
            entities: entities([entity]),
            serial: super::serial(),
        }
    }

    /// A tool: `exposed` is the name clients see, `original` the server's own;
    /// `labels` the tool's entry in `tools.labels`, if any; `annotations` the
    /// tool's MCP `annotations` object as the server listed it.
    pub fn tool(
        server: ServerRef<'_>,
        exposed: &str,
        original: &str,
        labels: Option<&Labels>,
        annotations: Option<&Value>,
    ) -> Target {
        let mut attrs = item_attrs(server, labels);
        attrs.insert(
            "name".into(),
            RestrictedExpression::new_string(exposed.into()),
        );
        attrs.insert(
            "original".into(),
            RestrictedExpression::new_string(original.into()),
        );
        attrs.insert(
            "untrusted_annotations".into(),
            annotations_record(annotations),
        );
        Target::item(
            TargetKind::Tool,
            server,
            &format!("{}/{original}", server.name),
            attrs,
        )
    }

    pub fn prompt(
        server: ServerRef<'_>,
        exposed: &str,
        original: &str,
        labels: Option<&Labels>,
    ) -> Target {
        let mut attrs = item_attrs(server, labels);
        attrs.insert(
            "name".into(),
            RestrictedExpression::new_string(exposed.into()),
        );
        attrs.insert(
            "original".into(),
            RestrictedExpression::new_string(original.into()),
        );
        Target::item(
            TargetKind::Prompt,
            server,
            &format!("{}/{original}", server.name),
            attrs,
        )
    }

    /// A resource: `uri` as clients see it, `original` as its server knows it.
    pub fn resource(server: ServerRef<'_>, uri: &str, original: &str) -> Target {
        let mut attrs = item_attrs(server, None);
        attrs.insert("uri".into(), RestrictedExpression::new_string(uri.into()));
        attrs.insert(
            "original".into(),
            RestrictedExpression::new_string(original.into()),
        );
        Target::item(
            TargetKind::Resource,
            server,
            &format!("{}/{original}", server.name),
            attrs,
        )
    }

    fn item(
        kind: TargetKind,
        server: ServerRef<'_>,
        id: &str,
        attrs: HashMap<String, RestrictedExpression>,
    ) -> Target {
        let server_entity = server_entity(server);
        let server_uid = server_entity.uid();
        let uid = uid(kind.type_name(), id);
        let item = Entity::new(uid.clone(), attrs, HashSet::from([server_uid.clone()]))
            .unwrap_or_else(|_| Entity::with_uid(uid.clone()));
        Target {
            kind,
            uid,
            server: Some(server_uid),
            entities: entities([item, server_entity]),
            serial: super::serial(),
        }
    }

    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The Cedar id, e.g. `Toolgate::Tool::"payments/refund"`.
    pub fn uid(&self) -> &EntityUid {
        &self.uid
    }

    /// The owning server's id (none for a server).
    pub fn server_uid(&self) -> Option<&EntityUid> {
        self.server.as_ref()
    }

    pub(crate) fn entities(&self) -> &Entities {
        &self.entities
    }

    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }
}

fn entities<const N: usize>(list: [Entity; N]) -> Entities {
    // Ids are distinct by construction (a server and an item within it).
    Entities::from_entities(list, None).unwrap_or_else(|_| Entities::empty())
}

/// The entity of a request's action, with its groups: Cedar needs it to
/// evaluate `action in Action::"use"`. The hierarchy is the published
/// schema's (a policy directory cannot declare actions), so it is built once.
pub(crate) fn action_entity(action: super::Action) -> &'static Entity {
    static ACTIONS: LazyLock<Vec<Entity>> = LazyLock::new(|| {
        let schema = super::schema::build(&[])
            .unwrap_or_else(|e| unreachable!("the published schema is valid: {e}"));
        let all = schema.schema.action_entities().ok();
        super::Action::ALL
            .iter()
            .map(|a| {
                all.as_ref()
                    .and_then(|all| all.get(a.uid()))
                    .cloned()
                    .unwrap_or_else(|| Entity::with_uid(a.uid().clone()))
            })
            .collect()
    });
    &ACTIONS[action as usize]
}

fn labels_into(attrs: &mut HashMap<String, RestrictedExpression>, labels: &Labels) {
    for (key, value) in [
        ("owner", &labels.owner),
        ("environment", &labels.environment),
        ("risk", &labels.risk),
    ] {
        if let Some(v) = value {
            attrs.insert(key.into(), RestrictedExpression::new_string(v.clone()));
        }
    }
    attrs.insert(
        "labels".into(),
        RestrictedExpression::new_set(
            labels
                .extra
                .iter()
                .map(|l| RestrictedExpression::new_string(l.clone())),
        ),
    );
}

fn server_entity(server: ServerRef<'_>) -> Entity {
    let mut attrs = HashMap::new();
    attrs.insert(
        "name".into(),
        RestrictedExpression::new_string(server.name.into()),
    );
    labels_into(&mut attrs, server.labels);
    let uid = uid("Server", server.name);
    Entity::new(uid.clone(), attrs, HashSet::new()).unwrap_or_else(|_| Entity::with_uid(uid))
}

fn item_attrs(
    server: ServerRef<'_>,
    labels: Option<&Labels>,
) -> HashMap<String, RestrictedExpression> {
    let mut attrs = HashMap::new();
    attrs.insert(
        "server".into(),
        RestrictedExpression::new_entity_uid(uid("Server", server.name)),
    );
    let effective = labels.map_or_else(|| server.labels.clone(), |l| l.over(server.labels));
    labels_into(&mut attrs, &effective);
    attrs
}

/// MCP tool annotations with the spec's defaults for absent or malformed hints.
/// The defaults assume the worst, so a server that says nothing gets no benefit.
fn annotations_record(annotations: Option<&Value>) -> RestrictedExpression {
    let get = |k: &str| annotations.and_then(|a| a.get(k));
    let hint = |k: &str, default: bool| {
        RestrictedExpression::new_bool(get(k).and_then(Value::as_bool).unwrap_or(default))
    };
    let mut attrs = vec![
        ("readOnlyHint".to_owned(), hint("readOnlyHint", false)),
        ("destructiveHint".to_owned(), hint("destructiveHint", true)),
        ("idempotentHint".to_owned(), hint("idempotentHint", false)),
        ("openWorldHint".to_owned(), hint("openWorldHint", true)),
    ];
    if let Some(t) = get("title").and_then(Value::as_str) {
        attrs.push(("title".into(), RestrictedExpression::new_string(t.into())));
    }
    RestrictedExpression::new_record(attrs)
        .unwrap_or_else(|_| RestrictedExpression::new_unknown("annotations"))
}

/// The principal's entity. Unrepresentable attribute values are recorded in
/// `mapper`.
pub(crate) fn principal_entity(p: &Principal, mapper: &mut Mapper) -> Entity {
    let qualified = |name: &str| match &p.tenant {
        Some(t) => format!("{t}/{name}"),
        None => name.to_owned(),
    };
    let uid = uid("User", &p.key());
    let mut parents: HashSet<EntityUid> = p
        .groups
        .iter()
        .map(|g| uid_of("Group", &qualified(g)))
        .collect();
    let mut attrs = HashMap::new();
    attrs.insert(
        "name".into(),
        RestrictedExpression::new_string(p.user.clone()),
    );
    if let Some(t) = &p.tenant {
        parents.insert(uid_of("Tenant", t));
        attrs.insert("tenant".into(), RestrictedExpression::new_string(t.clone()));
    }
    if let Some(a) = &p.agent {
        attrs.insert("agent".into(), RestrictedExpression::new_string(a.clone()));
    }
    attrs.insert(
        "auth_method".into(),
        RestrictedExpression::new_string(
            match p.method {
                AuthMethod::Anonymous => "anonymous",
                AuthMethod::ApiKey => "api_key",
                AuthMethod::Jwt => "jwt",
                AuthMethod::Mtls => "mtls",
            }
            .into(),
        ),
    );
    let strings = |v: &[String]| {
        RestrictedExpression::new_set(
            v.iter()
                .map(|s| RestrictedExpression::new_string(s.clone())),
        )
    };
    attrs.insert("scopes".into(), strings(&p.scopes));
    attrs.insert("groups".into(), strings(&p.groups));
    let record = mapper.record("principal.attrs", &p.attrs);
    attrs.insert(
        "attrs".into(),
        RestrictedExpression::new_record(record)
            .unwrap_or_else(|_| RestrictedExpression::new_unknown("principal.attrs")),
    );
    Entity::new(uid.clone(), attrs, parents).unwrap_or_else(|_| Entity::with_uid(uid))
}

fn uid_of(ty: &str, id: &str) -> EntityUid {
    uid(ty, id)
}

/// The client's protocol era.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: sessions opened with `initialize`.
    #[default]
    Legacy,
    /// 2026-07-28: stateless requests.
    Modern,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// Everything about a call besides who, what and on which item.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The call's arguments (`tools/call` `arguments`, `prompts/get`
    /// `arguments`, …): an object, or `None`.
    pub args: Option<&'a Value>,
    pub source: Option<IpAddr>,
    /// The endpoint the request arrived on (`/mcp`, `/message`, `stdio`).
    pub endpoint: &'a str,
    pub session: Option<&'a str>,
    pub era: Era,
    pub time: SystemTime,
}

impl<'a> CallContext<'a> {
    /// A context for `endpoint` at the current time, with nothing else known.
    pub fn now(endpoint: &'a str) -> Self {
        CallContext {
            args: None,
            source: None,
            endpoint,
            session: None,
            era: Era::Legacy,
            time: SystemTime::now(),
        }
    }
}

/// How `args` enter the Cedar context.
pub(crate) enum ArgsMode {
    /// As given (values Cedar cannot show become unknowns).
    Given,
    /// Entirely unknown: "for some arguments" (discovery).
    Unknown,
}

/// The Cedar context of a call, with the attributes `wants` asks for (building
/// the others is work no policy asked for: `time` and `source` are extension
/// values Cedar parses on every call).
pub(crate) fn context(
    c: &CallContext<'_>,
    args: ArgsMode,
    wants: &dyn Fn(&str) -> bool,
    mapper: &mut Mapper,
) -> Context {
    let secs = c
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(9);
    let mut add = |name: &str, value: RestrictedExpression| pairs.push((name.to_owned(), value));
    if wants("args") {
        add("args", args_expr(c, &args, mapper));
    }
    if wants("time") || wants("hour") || wants("weekday") {
        let (date, hour, minute, second, weekday) = civil(secs);
        if wants("time") {
            add(
                "time",
                cached_datetime(secs, || {
                    format!("{date}T{hour:02}:{minute:02}:{second:02}Z")
                }),
            );
        }
        if wants("hour") {
            add("hour", RestrictedExpression::new_long(hour));
        }
        if wants("weekday") {
            add("weekday", RestrictedExpression::new_long(weekday));
        }
    }
    if wants("now") {
        add("now", RestrictedExpression::new_long(secs));
    }
    if let Some(ip) = c.source.filter(|_| wants("source")) {
        add("source", cached_ip(ip));
    }
    if wants("endpoint") {
        add(
            "endpoint",
            RestrictedExpression::new_string(c.endpoint.into()),
        );
    }
    if let Some(s) = c.session.filter(|_| wants("session")) {
        add("session", RestrictedExpression::new_string(s.into()));
    }
    if wants("era") {
        add(
            "era",
            RestrictedExpression::new_string(c.era.as_str().into()),
        );
    }
    Context::from_pairs(pairs).unwrap_or_else(|_| Context::empty())
}

fn args_expr(c: &CallContext<'_>, args: &ArgsMode, mapper: &mut Mapper) -> RestrictedExpression {
    match args {
        ArgsMode::Unknown => RestrictedExpression::new_unknown("args"),
        ArgsMode::Given => match c.args {
            None => RestrictedExpression::new_record(Vec::<(String, RestrictedExpression)>::new())
                .unwrap_or_else(|_| RestrictedExpression::new_unknown("args")),
            Some(Value::Object(map)) => {
                RestrictedExpression::new_record(mapper.record("args", map))
                    .unwrap_or_else(|_| RestrictedExpression::new_unknown("args"))
            }
            Some(_) => {
                mapper.unrepresentable.push("args: not an object".into());
                RestrictedExpression::new_unknown("args")
            }
        },
    }
}

// Cedar parses an extension function's name each time one of its values is
// built (`ip`, `datetime`): a third of a decision's cost. Calls in the same
// second, and from an address seen before, reuse the built expression.
thread_local! {
    static TIME: std::cell::RefCell<Option<(i64, RestrictedExpression)>> =
        const { std::cell::RefCell::new(None) };
    static IPS: std::cell::RefCell<HashMap<IpAddr, RestrictedExpression>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Addresses remembered per thread before the cache starts over.
const IP_CACHE: usize = 4096;

fn cached_datetime(secs: i64, text: impl FnOnce() -> String) -> RestrictedExpression {
    TIME.with_borrow_mut(|cell| match cell {
        Some((s, e)) if *s == secs => e.clone(),
        _ => {
            let e = RestrictedExpression::new_datetime(text());
            *cell = Some((secs, e.clone()));
            e
        }
    })
}

fn cached_ip(ip: IpAddr) -> RestrictedExpression {
    IPS.with_borrow_mut(|map| {
        if let Some(e) = map.get(&ip) {
            return e.clone();
        }
        if map.len() >= IP_CACHE {
            map.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        map.insert(ip, e.clone());
        e
    })
}

/// Unix seconds → (`YYYY-MM-DD`, hour, minute, second, ISO weekday) in UTC.
fn civil(secs: i64) -> (String, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date (era-based: 400-year
    // cycles of 146,097 days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday (ISO 4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    (
        format!("{year:04}-{month:02}-{day:02}"),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        weekday,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        assert_eq!(civil(0), ("1970-01-01".into(), 0, 0, 0, 4));
        // 2026-11-23T10:30:05Z, a Monday.
        assert_eq!(civil(1_795_429_805), ("2026-11-23".into(), 10, 30, 5, 1));
        // 2024-02-29T23:59:59Z, a Thursday.
        assert_eq!(civil(1_709_251_199), ("2024-02-29".into(), 23, 59, 59, 4));
    }
}
