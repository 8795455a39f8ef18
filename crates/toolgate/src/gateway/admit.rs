//! The admit stage: after a call is authorized and before it is forwarded,
//! every limit that applies to it must let it through (`crate::limits`). A
//! refused call never reaches its server; it is answered with -32042, counted
//! in `toolgate_limited_total` and audited as a denial whose reason is the
//! refusal's code.

use super::{Gateway, Session};
use crate::jsonrpc::ErrorObject;
use crate::limits::{Call, Permit, Refused};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// A call let through: the slots it holds (given back when this is dropped,
/// whether the call ends, fails, times out or is cancelled) and the size its
/// result may have.
pub(crate) struct Admitted {
    _permits: Vec<Permit>,
    server: Arc<str>,
    max_result: Option<usize>,
}

impl Gateway {
    /// Admit a call of `method` to `server` (for tools and prompts, `item` is
    /// the exposed name) with these `params`, or refuse it.
    pub(crate) async fn admit(
        &self,
        session: &Session,
        server: usize,
        method: &str,
        item: Option<&str>,
        params: &Value,
    ) -> Result<Admitted, ErrorObject> {
        let server: Arc<str> = self
            .servers
            .get(server)
            .map_or_else(|| "".into(), |s| s.name.clone());
        let snapshot = self.limits.snapshot();
        let sizes = snapshot.sizes(&server);
        if let Some(max) = sizes.max_request {
            let size = usize::try_from(super::audit::json_len(params)).unwrap_or(usize::MAX);
            if size > max {
                return Err(refuse(
                    session,
                    &server,
                    Refused::RequestTooLarge {
                        server: server.clone(),
                        size,
                        max,
                    },
                ));
            }
        }
        let call = Call {
            principal: &session.identity,
            endpoint: &session.endpoint,
            server: &server,
            method,
            item,
        };
        match self.limits.admit(&snapshot, &call).await {
            Ok(permits) => Ok(Admitted {
                _permits: permits,
                max_result: sizes.max_result,
                server,
            }),
            Err(refused) => Err(refuse(session, &server, refused)),
        }
    }
}

impl Admitted {
    /// The answer to the client once the server answered: a result larger than
    /// the server may return becomes an error. The call's slots are given back.
    pub(crate) fn finish(
        self,
        outcome: Result<Box<RawValue>, ErrorObject>,
    ) -> Result<Box<RawValue>, ErrorObject> {
        let (Some(max), Ok(result)) = (self.max_result, &outcome) else {
            return outcome;
        };
        let size = result.get().len();
        if size <= max {
            return outcome;
        }
        let refused = Refused::ResultTooLarge {
            server: self.server.clone(),
            size,
            max,
        };
        tracing::info!(
            server = %self.server,
            size,
            max,
            "result withheld: larger than max_result_bytes"
        );
        crate::metrics::limited(refused.limit(), refused.kind(), &self.server);
        // The call was allowed and made; only its result is withheld.
        crate::audit::note(|f| {
            f.reason_code = Some(refused.code().to_owned());
            f.reason = Some(refused.to_string());
        });
        Err(refused.to_error())
    }
}

/// Log, count and audit a refusal; the client's error.
fn refuse(session: &Session, server: &str, refused: Refused) -> ErrorObject {
    // Debug, not info: a flood would flood the log too; metrics and the audit
    // trail count every refusal.
    tracing::debug!(
        principal = %session.principal,
        server,
        limit = refused.limit(),
        code = refused.code(),
        "refused by a limit"
    );
    crate::metrics::limited(refused.limit(), refused.kind(), server);
    super::audit::note_decision(false, Some(refused.code()), &[], Some(&refused.to_string()));
    refused.to_error()
}
