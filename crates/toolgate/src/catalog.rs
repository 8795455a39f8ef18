//! The merged catalog: every server's tools, prompts, resources and templates under
//! the names clients see, with the tables that route each one back to its owner.
//!
//! A catalog is immutable; when a server's lists change a new one is built and
//! swapped in whole, so readers never lock. List responses are assembled from
//! pre-serialised items.

use crate::config::{Config, ItemRules};
use crate::jsonrpc::{ErrorObject, code};
use crate::names::{self, Candidate};
use crate::seal::Sealer;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// One server's lists, as it gave them (hidden items included).
#[derive(Debug, Default, Clone)]
pub struct ServerLists {
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
    /// The smallest `ttlMs` the server gave its lists (2026-07-28 servers).
    pub ttl_ms: Option<u64>,
    /// The server marked a list `cacheScope: "private"`.
    pub private: bool,
}

/// What the catalog needs to know about a server.
pub struct ServerView<'a> {
    pub name: &'a str,
    pub prefix: &'a str,
    pub tools: &'a ItemRules,
    pub prompts: &'a ItemRules,
    pub lists: Option<&'a ServerLists>,
}

#[derive(Debug)]
pub struct Item {
    /// The name (tools, prompts) or URI (resources, templates) clients see.
    pub exposed: String,
    /// Index of the owning server in the gateway's server list.
    pub server: usize,
    /// What the owner calls it.
    pub original: String,
    /// The item as listed to clients: the server's JSON, name or URI replaced.
    pub json: Box<RawValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub fn from_method(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            _ => return None,
        })
    }

    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The member of the list result that holds the items.
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    fn tag(self) -> u8 {
        self as u8
    }
}

/// Prefix of a rewritten resource URI: `toolgate://{server}/{original}`.
const URI_PREFIX: &str = "toolgate://";

#[derive(Debug, Default)]
pub struct Catalog {
    pub generation: u64,
    pub tools: Vec<Item>,
    pub prompts: Vec<Item>,
    pub resources: Vec<Item>,
    pub templates: Vec<Item>,
    /// The servers' own caching hints, combined: the shortest TTL, and private
    /// if any server's list is.
    pub ttl_ms: Option<u64>,
    pub private: bool,
    server_names: Vec<String>,
    tool_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
    resource_index: HashMap<String, usize>,
    /// (server, original URI) → exposed URI, for the URIs rewritten on collision.
    rewritten: HashMap<(usize, String), String>,
}

impl Catalog {
    pub fn build(config: &Config, servers: &[ServerView<'_>], generation: u64) -> Catalog {
        let mut cat = Catalog {
            generation,
            server_names: servers.iter().map(|s| s.name.to_owned()).collect(),
            ..Default::default()
        };
        cat.tools = named_items(config, servers, |s, l| (s.tools, &l.tools));
        cat.prompts = named_items(config, servers, |s, l| (s.prompts, &l.prompts));
        cat.tool_index = index(&cat.tools);
        cat.prompt_index = index(&cat.prompts);

        for (idx, s) in servers.iter().enumerate() {
            let Some(lists) = s.lists else { continue };
            if let Some(ttl) = lists.ttl_ms {
                cat.ttl_ms = Some(cat.ttl_ms.map_or(ttl, |t| t.min(ttl)));
            }
            cat.private |= lists.private;
            for r in &lists.resources {
                let Some(uri) = r.get("uri").and_then(Value::as_str) else {
                    continue;
                };
                // First owner keeps the URI; later owners of the same URI are rewritten.
                let exposed = if cat.resource_index.contains_key(uri) {
                    let e = format!("{URI_PREFIX}{}/{uri}", s.name);
                    cat.rewritten.insert((idx, uri.to_owned()), e.clone());
                    e
                } else {
                    uri.to_owned()
                };
                if cat.resource_index.contains_key(&exposed) {
                    continue;
                }
                let mut item = r.clone();
                item["uri"] = Value::String(exposed.clone());
                cat.resource_index
                    .insert(exposed.clone(), cat.resources.len());
                cat.resources.push(Item {
                    exposed,
                    server: idx,
                    original: uri.to_owned(),
                    json: crate::jsonrpc::to_raw(&item),
                });
            }
            for t in &lists.templates {
                let Some(tpl) = t.get("uriTemplate").and_then(Value::as_str) else {
                    continue;
                };
                cat.templates.push(Item {
                    exposed: tpl.to_owned(),
                    server: idx,
                    original: tpl.to_owned(),
                    json: crate::jsonrpc::to_raw(t),
                });
            }
        }
        cat
    }

    pub fn items(&self, kind: ListKind) -> &[Item] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::Templates => &self.templates,
        }
    }

    /// The name of the server at `idx` (the gateway's server order).
    pub fn server_name(&self, idx: usize) -> &str {
        self.server_names.get(idx).map_or("", String::as_str)
    }

    /// Where an item is in its list (what [`Catalog::page`]'s `visible` indexes).
    pub fn position(&self, kind: ListKind, exposed: &str) -> Option<usize> {
        match kind {
            ListKind::Tools => self.tool_index.get(exposed).copied(),
            ListKind::Prompts => self.prompt_index.get(exposed).copied(),
            ListKind::Resources => self.resource_index.get(exposed).copied(),
            ListKind::Templates => self.templates.iter().position(|t| t.exposed == exposed),
        }
    }

    pub fn tool(&self, exposed: &str) -> Option<&Item> {
        self.tool_index.get(exposed).map(|&i| &self.tools[i])
    }

    pub fn prompt(&self, exposed: &str) -> Option<&Item> {
        self.prompt_index.get(exposed).map(|&i| &self.prompts[i])
    }

    /// The owner of a URI a client names, and what the owner calls it: a listed
    /// resource, a rewritten URI, or a URI matching one server's template.
    pub fn route_uri(&self, uri: &str) -> Option<(usize, String)> {
        if let Some(&i) = self.resource_index.get(uri) {
            let item = &self.resources[i];
            return Some((item.server, item.original.clone()));
        }
        if let Some(rest) = uri.strip_prefix(URI_PREFIX)
            && let Some((server, original)) = rest.split_once('/')
            && let Some(idx) = self.server_names.iter().position(|n| n == server)
        {
            return Some((idx, original.to_owned()));
        }
        self.templates
            .iter()
            .find(|t| template_matches(&t.original, uri))
            .map(|t| (t.server, uri.to_owned()))
    }

    /// The URI clients see for a server's own URI.
    pub fn expose_uri<'a>(&'a self, server: usize, original: &'a str) -> &'a str {
        self.rewritten
            .get(&(server, original.to_owned()))
            .map_or(original, String::as_str)
    }

    /// The server a URI resolves to without help: a listed resource or a template.
    fn owner_of(&self, uri: &str) -> Option<usize> {
        if let Some(&i) = self.resource_index.get(uri) {
            return Some(self.resources[i].server);
        }
        self.templates
            .iter()
            .find(|t| template_matches(&t.original, uri))
            .map(|t| t.server)
    }

    /// Make every `uri` member of a message from `server` route back to it: kept
    /// when it already resolves to `server` (or to nobody — then `unowned` hears of
    /// it, so the caller can remember the owner), rewritten to
    /// `toolgate://{server}/…` when it would resolve to another server. This covers
    /// resource links, embedded resources, read contents and update notifications.
    pub fn expose_uris(&self, server: usize, v: &mut Value, unowned: &mut dyn FnMut(&str)) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match child {
                        Value::String(u) if k == "uri" => {
                            if let Some(e) = self.rewritten.get(&(server, u.clone())) {
                                *u = e.clone();
                                continue;
                            }
                            match self.owner_of(u) {
                                Some(owner) if owner == server => {}
                                Some(_) => {
                                    *u = format!("{URI_PREFIX}{}/{u}", self.server_names[server]);
                                }
                                None => unowned(u),
                            }
                        }
                        _ => self.expose_uris(server, child, unowned),
                    }
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|c| self.expose_uris(server, c, unowned)),
            _ => {}
        }
    }

    /// One page of a merged list, as the JSON text of the result. `visible`, when
    /// given, says per item (by position in [`Catalog::items`]) whether this caller
    /// may see it; cursors count positions in the whole list, so a page skips what
    /// the caller may not see and a cursor reveals nothing about it.
    pub fn page(
        &self,
        kind: ListKind,
        cursor: Option<&str>,
        page_size: usize,
        cursors: &Cursors,
        visible: Option<&[bool]>,
        owner: &str,
    ) -> Result<String, ErrorObject> {
        let items = self.items(kind);
        let start = match cursor {
            None => 0,
            Some(c) => cursors.decode(kind, c, owner)?,
        };
        let start = start.min(items.len());
        let shown = |i: usize| visible.is_none_or(|v| v.get(i).copied().unwrap_or(false));
        let mut chosen = Vec::with_capacity(page_size.min(items.len() - start));
        let mut end = start;
        while end < items.len() && chosen.len() < page_size {
            if shown(end) {
                chosen.push(&items[end]);
            }
            end += 1;
        }
        let mut out = String::with_capacity(
            64 + chosen.iter().map(|i| i.json.get().len() + 1).sum::<usize>(),
        );
        out.push_str("{\"");
        out.push_str(kind.field());
        out.push_str("\":[");
        for (n, item) in chosen.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(item.json.get());
        }
        out.push(']');
        if (end..items.len()).any(shown) {
            out.push_str(",\"nextCursor\":");
            out.push_str(&Value::String(cursors.encode(kind, end, owner)).to_string());
        }
        out.push('}');
        Ok(out)
    }

    /// A summary for `toolgate catalog --json`.
    pub fn describe(&self) -> Value {
        let owner = |i: &Item| self.server_names[i.server].clone();
        let named = |items: &[Item]| {
            items
                .iter()
                .map(|i| json!({ "name": i.exposed, "server": owner(i), "original": i.original }))
                .collect::<Vec<_>>()
        };
        let uris = |items: &[Item]| {
            items
                .iter()
                .map(|i| json!({ "uri": i.exposed, "server": owner(i), "original": i.original }))
                .collect::<Vec<_>>()
        };
        json!({
            "tools": named(&self.tools),
            "prompts": named(&self.prompts),
            "resources": uris(&self.resources),
            "resourceTemplates": uris(&self.templates),
        })
    }
}

fn index(items: &[Item]) -> HashMap<String, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.exposed.clone(), i))
        .collect()
}

/// Name tools or prompts across servers, dropping hidden ones.
fn named_items<'a>(
    config: &Config,
    servers: &'a [ServerView<'a>],
    pick: impl Fn(&'a ServerView<'a>, &'a ServerLists) -> (&'a ItemRules, &'a Vec<Value>),
) -> Vec<Item> {
    let mut owners = Vec::new();
    let mut candidates = Vec::new();
    for (idx, s) in servers.iter().enumerate() {
        let Some(lists) = s.lists else { continue };
        let (rules, list) = pick(s, lists);
        for item in list {
            let Some(name) = item.get("name").and_then(Value::as_str) else {
                continue;
            };
            if rules.hide.iter().any(|h| h == name) {
                continue;
            }
            owners.push((idx, item));
            candidates.push(Candidate {
                prefix: s.prefix,
                original: name,
                rename: rules.rename.get(name).map(String::as_str),
            });
        }
    }
    let exposed = names::assign(&candidates, config.prefix_mode, &config.separator);
    owners
        .into_iter()
        .zip(candidates)
        .zip(exposed)
        .map(|(((server, item), cand), exposed)| {
            let mut json = item.clone();
            json["name"] = Value::String(exposed.clone());
            Item {
                exposed,
                server,
                original: cand.original.to_owned(),
                json: crate::jsonrpc::to_raw(&json),
            }
        })
        .collect()
}

/// Does `uri` match an RFC 6570 template? Literal parts must appear in order;
/// each expression matches a non-empty run (reserved expansions may span `/`).
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return false;
        };
        let op = rest[open + 1..].chars().next();
        parts.push((rest[..open].to_owned(), matches!(op, Some('+' | '#' | '/'))));
        rest = &rest[open + close + 1..];
    }
    let tail = rest;
    fn go(parts: &[(String, bool)], tail: &str, uri: &str, first: bool, wide: bool) -> bool {
        let Some(((lit, next_wide), more)) = parts.split_first() else {
            // After the last expression only the tail literal remains.
            return match uri.strip_suffix(tail) {
                Some(var) if !first => !var.is_empty() && (wide || !var.contains('/')),
                Some(var) => var.is_empty(),
                None => false,
            };
        };
        if first {
            return uri
                .strip_prefix(lit.as_str())
                .is_some_and(|r| go(more, tail, r, false, *next_wide));
        }
        // Try every place the literal can follow a non-empty expression value.
        let mut search = 1;
        while let Some(pos) = uri.get(search..).and_then(|s| s.find(lit.as_str())) {
            let at = search + pos;
            let var = &uri[..at];
            if (wide || !var.contains('/'))
                && go(more, tail, &uri[at + lit.len()..], false, *next_wide)
            {
                return true;
            }
            search = at + 1;
        }
        false
    }
    go(&parts, tail, uri, true, false)
}

/// Tamper-proof pagination cursors: position and list kind, sealed by the
/// gateway, so a client can neither forge one nor reuse one across lists.
pub struct Cursors {
    sealer: Sealer,
}

impl Cursors {
    pub fn new(sealer: Sealer) -> Self {
        Cursors { sealer }
    }

    /// A cursor for `offset` in a list, good only for `owner` (the principal's
    /// key): one caller's cursor is worthless to another.
    pub fn encode(&self, kind: ListKind, offset: usize, owner: &str) -> String {
        self.sealer
            .seal(&format!("{}.{offset}.{owner}", kind.tag()))
    }

    pub fn decode(&self, kind: ListKind, cursor: &str, owner: &str) -> Result<usize, ErrorObject> {
        let invalid = || ErrorObject::new(code::INVALID_PARAMS, "Invalid cursor");
        let payload = self.sealer.open(cursor).ok_or_else(invalid)?;
        let mut parts = payload.splitn(3, '.');
        let (Some(k), Some(offset), Some(o)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        if k != kind.tag().to_string() || o != owner {
            return Err(invalid());
        }
        offset.parse().map_err(|_| invalid())
    }
}

/// Shared handle to the current catalog.
pub type CatalogRef = Arc<Catalog>;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::load_str("servers: {}", "t", false).unwrap()
    }

    fn lists(tools: &[&str], uris: &[&str]) -> ServerLists {
        ServerLists {
            tools: tools
                .iter()
                .map(|t| json!({"name": t, "inputSchema": {"type": "object"}, "x-extra": 1}))
                .collect(),
            resources: uris.iter().map(|u| json!({"uri": u, "name": u})).collect(),
            templates: vec![json!({"uriTemplate": "test://template/{id}/data", "name": "t"})],
            ..Default::default()
        }
    }

    #[test]
    fn merges_names_hides_and_routes() {
        let a = lists(&["read", "secret"], &["file:///a", "test://shared"]);
        let b = lists(&["read"], &["test://shared"]);
        let hide = ItemRules {
            hide: vec!["secret".into()],
            ..Default::default()
        };
        let none = ItemRules::default();
        let views = [
            ServerView {
                name: "a",
                prefix: "a",
                tools: &hide,
                prompts: &none,
                lists: Some(&a),
            },
            ServerView {
                name: "b",
                prefix: "b",
                tools: &none,
                prompts: &none,
                lists: Some(&b),
            },
        ];
        let cat = Catalog::build(&config(), &views, 1);
        let names: Vec<_> = cat.tools.iter().map(|t| t.exposed.as_str()).collect();
        assert_eq!(names, ["a__read", "b__read"]);
        assert!(cat.tool("a__secret").is_none());
        assert_eq!(cat.tool("b__read").unwrap().original, "read");
        // Unknown fields survive into the listing.
        assert!(cat.tools[0].json.get().contains("\"x-extra\":1"));
        // The shared URI keeps its name for the first owner and is rewritten for the second.
        assert_eq!(
            cat.route_uri("test://shared"),
            Some((0, "test://shared".into()))
        );
        let rewritten = cat.expose_uri(1, "test://shared").to_owned();
        assert_eq!(rewritten, "toolgate://b/test://shared");
        assert_eq!(cat.route_uri(&rewritten), Some((1, "test://shared".into())));
        let mut result = json!({"content": [
            {"type": "resource_link", "uri": "test://shared"},
            {"type": "resource", "resource": {"uri": "test://template/1/data"}},
            {"type": "resource_link", "uri": "mem://fresh"}
        ]});
        let mut unowned = Vec::new();
        cat.expose_uris(1, &mut result, &mut |u| unowned.push(u.to_owned()));
        assert_eq!(result["content"][0]["uri"], rewritten);
        // Server b's own URI that a's template would claim is rewritten to route to b.
        assert_eq!(
            result["content"][1]["resource"]["uri"],
            "toolgate://b/test://template/1/data"
        );
        assert_eq!(result["content"][2]["uri"], "mem://fresh");
        assert_eq!(unowned, ["mem://fresh"]);
        // Templates route URIs that were never listed.
        assert_eq!(
            cat.route_uri("test://template/42/data").map(|r| r.0),
            Some(0)
        );
    }

    #[test]
    fn pages_with_authenticated_cursors() {
        let a = lists(&["t1", "t2", "t3"], &[]);
        let none = ItemRules::default();
        let views = [ServerView {
            name: "a",
            prefix: "a",
            tools: &none,
            prompts: &none,
            lists: Some(&a),
        }];
        let cat = Catalog::build(&config(), &views, 1);
        let cursors = Cursors::new(Sealer::new());
        let p1: Value = serde_json::from_str(
            &cat.page(ListKind::Tools, None, 2, &cursors, None, "alice")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(p1["tools"].as_array().unwrap().len(), 2);
        let next = p1["nextCursor"].as_str().unwrap();
        let p2: Value = serde_json::from_str(
            &cat.page(ListKind::Tools, Some(next), 2, &cursors, None, "alice")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(p2["tools"][0]["name"], "a__t3");
        assert!(p2.get("nextCursor").is_none());
        let forged = next.replacen("0.2", "0.1", 1);
        assert!(
            cat.page(ListKind::Tools, Some(&forged), 2, &cursors, None, "alice")
                .is_err()
        );
        assert!(
            cat.page(ListKind::Prompts, Some(next), 2, &cursors, None, "alice")
                .is_err()
        );
        // Another caller's cursor is no cursor at all.
        assert!(
            cat.page(
                ListKind::Tools,
                Some(next),
                2,
                &cursors,
                None,
                "acme/mallory"
            )
            .is_err()
        );
    }

    #[test]
    fn pages_skip_what_the_caller_may_not_see() {
        let a = lists(&["t1", "t2", "t3", "t4", "t5"], &[]);
        let none = ItemRules::default();
        let views = [ServerView {
            name: "a",
            prefix: "a",
            tools: &none,
            prompts: &none,
            lists: Some(&a),
        }];
        let cat = Catalog::build(&config(), &views, 1);
        let cursors = Cursors::new(Sealer::new());
        let visible = [true, false, false, true, false];
        let page = |cursor: Option<&str>| -> Value {
            let text = cat
                .page(
                    ListKind::Tools,
                    cursor,
                    1,
                    &cursors,
                    Some(&visible),
                    "alice",
                )
                .unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let p1 = page(None);
        assert_eq!(p1["tools"][0]["name"], "a__t1");
        let p2 = page(p1["nextCursor"].as_str());
        assert_eq!(p2["tools"][0]["name"], "a__t4");
        // Nothing visible is left: no cursor to a page of nothing.
        assert!(p2.get("nextCursor").is_none(), "{p2}");
        let all: Value = serde_json::from_str(
            &cat.page(
                ListKind::Tools,
                None,
                10,
                &cursors,
                Some(&[false; 5]),
                "alice",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(all, json!({"tools": []}));
    }

    #[test]
    fn caching_hints_combine_to_the_strictest() {
        let mut a = lists(&["x"], &[]);
        a.ttl_ms = Some(5_000);
        let mut b = lists(&["y"], &[]);
        b.ttl_ms = Some(1_000);
        b.private = true;
        let none = ItemRules::default();
        let views = [
            ServerView {
                name: "a",
                prefix: "a",
                tools: &none,
                prompts: &none,
                lists: Some(&a),
            },
            ServerView {
                name: "b",
                prefix: "b",
                tools: &none,
                prompts: &none,
                lists: Some(&b),
            },
        ];
        let cat = Catalog::build(&config(), &views, 1);
        assert_eq!(cat.ttl_ms, Some(1_000));
        assert!(cat.private);
        let cat = Catalog::build(&config(), &views[..1], 1);
        assert_eq!(cat.ttl_ms, Some(5_000));
        assert!(!cat.private);
    }

    #[test]
    fn templates() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/1/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c"));
        assert!(template_matches("res://{a}", "res://x"));
        assert!(!template_matches("res://{a}", "other://x"));
    }
}
