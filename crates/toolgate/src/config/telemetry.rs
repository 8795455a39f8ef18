//! The `telemetry:` section: where spans and audit log records are exported.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// OpenTelemetry export over OTLP/HTTP (protobuf). Without this section nothing
/// is exported and a request's span costs next to nothing. The standard
/// `OTEL_BSP_*` / `OTEL_BLRP_*` variables tune the batching.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318` (an
    /// OpenTelemetry Collector): spans go to `/v1/traces` below it, audit
    /// events (`audit.sinks: [otlp]`) to `/v1/logs`. `${VAR}` is expanded.
    pub otlp_endpoint: String,
    /// The `service.name` of everything exported.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of traces that start at the gateway which are recorded, from 0.0
    /// to 1.0. A caller's `traceparent` decides for the traces it continues.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export, e.g. a hosted backend's API key
    /// (`${VAR}` is expanded).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_service_name() -> String {
    "toolgate".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl TelemetryConfig {
    /// Expand `${VAR}` and check the values; errors name the key.
    pub(super) fn prepare(&mut self) -> Result<(), (String, String)> {
        let key = |field: &str| format!("telemetry.{field}");
        self.otlp_endpoint =
            super::load::expand(&self.otlp_endpoint).map_err(|m| (key("otlp_endpoint"), m))?;
        for (k, v) in self.headers.iter_mut() {
            *v = super::load::expand(v).map_err(|m| (key(&format!("headers.{k}")), m))?;
        }
        match url::Url::parse(&self.otlp_endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => {
                return Err((
                    key("otlp_endpoint"),
                    "must be an http:// or https:// URL, e.g. http://127.0.0.1:4318".into(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err((key("sample_ratio"), "must be between 0.0 and 1.0".into()));
        }
        if self.service_name.trim().is_empty() {
            return Err((key("service_name"), "must not be empty".into()));
        }
        for k in self.headers.keys() {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err((
                    key(&format!("headers.{k}")),
                    "is not a valid header name".into(),
                ));
            }
        }
        Ok(())
    }

    /// Where spans are sent.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }

    /// Where log records (audit events) are sent.
    pub fn logs_url(&self) -> String {
        format!("{}/v1/logs", self.otlp_endpoint.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    #[test]
    fn telemetry_is_read_and_checked() {
        let c = load_str(
            "telemetry:\n  otlp_endpoint: http://127.0.0.1:4318/\n  headers: { X-Key: \"${TOOLGATE_TEST_UNSET_VAR:-k}\" }\n",
            "t.yaml",
            false,
        )
        .unwrap();
        let t = c.telemetry.unwrap();
        assert_eq!(t.service_name, "toolgate");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.logs_url(), "http://127.0.0.1:4318/v1/logs");
        assert_eq!(t.headers["X-Key"], "k");

        for (text, key) in [
            (
                "telemetry: { otlp_endpoint: localhost:4318 }",
                "telemetry.otlp_endpoint",
            ),
            (
                "telemetry: { otlp_endpoint: http://x, sample_ratio: 2 }",
                "telemetry.sample_ratio",
            ),
            ("audit: { sinks: [otlp] }", "audit.sinks"),
        ] {
            let e = load_str(text, "t.yaml", false).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
        let e = load_str(
            "telemetry: { otlp_endpoint: http://x, bogus: 1 }",
            "t.yaml",
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
