//! Every catalog item as a policy [`Target`], built once per catalog snapshot
//! so that a call only looks its target up.

use super::{ServerRef, Target};
use crate::catalog::{Catalog, Item};
use crate::config::{Config, Labels};
use serde_json::Value;

/// The targets of one catalog snapshot, index for index: `tools[i]` is
/// `catalog.tools[i]`, `servers[s]` is the server of index `s`.
pub struct CatalogTargets {
    pub generation: u64,
    pub servers: Vec<Target>,
    pub tools: Vec<Target>,
    pub prompts: Vec<Target>,
    pub resources: Vec<Target>,
}

impl CatalogTargets {
    /// `server_names` are the gateway's servers in catalog index order (the
    /// order of the views the catalog was built from); labels come from `config`.
    pub fn build(config: &Config, catalog: &Catalog, server_names: &[&str]) -> CatalogTargets {
        let none = Labels::default();
        let server = |i: usize| {
            let name = server_names.get(i).copied().unwrap_or("");
            let cfg = config.servers.get(name);
            (name, cfg)
        };
        let sref = |i: usize| {
            let (name, cfg) = server(i);
            ServerRef {
                name,
                labels: cfg.map_or(&none, |c| &c.labels),
            }
        };
        let annotations = |item: &Item| -> Option<Value> {
            serde_json::from_str::<Value>(item.json.get())
                .ok()?
                .get("annotations")
                .cloned()
        };
        CatalogTargets {
            generation: catalog.generation,
            servers: (0..server_names.len())
                .map(|i| Target::server(sref(i)))
                .collect(),
            tools: catalog
                .tools
                .iter()
                .map(|t| {
                    let labels = server(t.server)
                        .1
                        .and_then(|c| c.tools.labels.get(&t.original));
                    Target::tool(
                        sref(t.server),
                        &t.exposed,
                        &t.original,
                        labels,
                        annotations(t).as_ref(),
                    )
                })
                .collect(),
            prompts: catalog
                .prompts
                .iter()
                .map(|p| {
                    let labels = server(p.server)
                        .1
                        .and_then(|c| c.prompts.labels.get(&p.original));
                    Target::prompt(sref(p.server), &p.exposed, &p.original, labels)
                })
                .collect(),
            resources: catalog
                .resources
                .iter()
                .map(|r| Target::resource(sref(r.server), &r.exposed, &r.original))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ServerLists, ServerView};
    use crate::config::ItemRules;
    use serde_json::json;

    #[test]
    fn targets_follow_the_catalog_and_the_labels() {
        let config = crate::config::load_str(
            "servers:\n  pay:\n    url: http://127.0.0.1:1/mcp\n    labels: { risk: low, environment: prod }\n    tools: { labels: { refund: { risk: high } } }\n",
            "t.yaml",
            false,
        )
        .unwrap();
        let lists = ServerLists {
            tools: vec![
                json!({"name": "refund", "annotations": {"destructiveHint": true}}),
                json!({"name": "status", "annotations": {"readOnlyHint": true}}),
            ],
            resources: vec![json!({"uri": "pay://ledger", "name": "ledger"})],
            ..Default::default()
        };
        let rules = ItemRules::default();
        let views = [ServerView {
            name: "pay",
            prefix: "pay",
            tools: &rules,
            prompts: &rules,
            lists: Some(&lists),
        }];
        let catalog = Catalog::build(&config, &views, 7);
        let targets = CatalogTargets::build(&config, &catalog, &["pay"]);
        assert_eq!(targets.generation, 7);
        assert_eq!(targets.tools.len(), 2);
        assert_eq!(
            targets.tools[0].uid().to_string(),
            r#"Toolgate::Tool::"pay/refund""#
        );
        assert_eq!(
            targets.resources[0].uid().to_string(),
            r#"Toolgate::Resource::"pay/pay://ledger""#
        );
        let p = super::super::Policies::from_text(
            "t.cedar",
            r#"permit (principal, action == Toolgate::Action::"call_tool", resource) when { resource has risk && resource.risk == "low" && resource.untrusted_annotations.readOnlyHint };"#,
        )
        .unwrap();
        let who = crate::auth::Principal::anonymous("u");
        let allowed = |t: &Target| {
            p.decide(&super::super::Request {
                principal: &who,
                action: super::super::Action::CallTool,
                target: t,
                context: super::super::CallContext::now("/mcp"),
            })
            .allowed
        };
        // refund is labelled high risk over the server's low; status says read-only.
        assert!(!allowed(&targets.tools[0]));
        assert!(allowed(&targets.tools[1]));
    }
}
