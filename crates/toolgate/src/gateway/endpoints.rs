//! Endpoints: extra MCP paths (`endpoints:` in the config), each a virtual server
//! exposing a subset of the catalog.
//!
//! An endpoint's filter is its own decision, made before and independently of
//! the policies: an item is visible through an endpoint iff the endpoint exposes
//! it AND the policies allow it. The filter applies even when the gateway is
//! open (no auth, no policy), which is why it does not live inside `Authz`.
//! Sessions and modern requests carry their endpoint's path, which is how the
//! core finds the filter again.

use super::authz::View;
use crate::catalog::{Catalog, Item, ListKind};
use crate::config::{Config, EndpointConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The endpoints of one configuration, by path, and their masks of the current
/// catalog.
pub(crate) struct Endpoints {
    by_path: HashMap<String, EndpointConfig>,
    /// One mask per endpoint path, recomputed when the catalog generation moves.
    masks: Mutex<HashMap<String, Arc<View>>>,
}

impl Endpoints {
    pub fn new(config: &Config) -> Endpoints {
        Endpoints {
            by_path: config
                .endpoints
                .values()
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
            masks: Mutex::default(),
        }
    }

    /// The endpoint served at `path`; `None` for `/mcp`, `/sse`, stdio, which
    /// expose everything.
    pub fn get(&self, path: &str) -> Option<&EndpointConfig> {
        self.by_path.get(path)
    }

    /// Whether the endpoint at `path` exposes anything of server `name`.
    pub fn allows_server(&self, path: &str, name: &str) -> bool {
        self.get(path).is_none_or(|e| exposes_server(e, name))
    }

    /// What the endpoint at `path` exposes of `cat`; `None` when everything.
    pub fn mask(&self, path: &str, cat: &Catalog) -> Option<Arc<View>> {
        let ep = self.get(path)?;
        let mut masks = self.masks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = masks.get(path)
            && m.catalog() == cat.generation
        {
            return Some(m.clone());
        }
        let server_of = |i: &Item| cat.server_name(i.server);
        let by_server = |items: &[Item]| -> Vec<bool> {
            items
                .iter()
                .map(|i| exposes_server(ep, server_of(i)))
                .collect()
        };
        let tools = cat
            .tools
            .iter()
            .map(|i| {
                exposes_server(ep, server_of(i))
                    && ep.tools.as_ref().is_none_or(|t| t.contains(&i.exposed))
            })
            .collect();
        let mask = Arc::new(View::mask(
            cat.generation,
            [
                (ListKind::Tools, tools),
                (ListKind::Prompts, by_server(&cat.prompts)),
                (ListKind::Resources, by_server(&cat.resources)),
                (ListKind::Templates, by_server(&cat.templates)),
            ],
        ));
        masks.insert(path.to_owned(), mask.clone());
        Some(mask)
    }
}

fn exposes_server(ep: &EndpointConfig, name: &str) -> bool {
    ep.servers
        .as_ref()
        .is_none_or(|s| s.iter().any(|n| n == name))
}
