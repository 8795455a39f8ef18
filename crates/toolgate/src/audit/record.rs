//! What a request learns about itself on its way through the pipeline — which
//! server owns it, what the policies said, how long the upstream took — kept
//! for its audit event.
//!
//! The stages that learn these things (authorize, forward) are several calls
//! deep; instead of threading a context through every signature, the request's
//! [`Record`] is task-local for the duration of its dispatch and stages add to
//! it with [`note`]. Outside a request (discovery for a listen stream, a
//! background refresh) `note` does nothing.

use super::Verdict;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

tokio::task_local! {
    static CURRENT: Arc<Record>;
}

/// The facts of one request.
#[derive(Debug, Default)]
pub struct Record {
    facts: Mutex<Facts>,
}

#[derive(Debug, Default, Clone)]
pub struct Facts {
    pub server: Option<Arc<str>>,
    /// The tool or prompt (exposed name) or resource URI.
    pub target: Option<String>,
    /// The server's own name of the tool (for per-tool redaction).
    pub original: Option<String>,
    pub decision: Option<Verdict>,
    pub reason_code: Option<String>,
    pub policies: Vec<String>,
    pub reason: Option<String>,
    pub upstream: Duration,
    /// Arguments as the redaction rule allows, or their digest.
    pub arguments: Option<Value>,
    pub arguments_digest: Option<String>,
    /// The answer came from the result cache: nothing reached the server.
    pub cache_hit: bool,
}

impl Record {
    pub fn new() -> Arc<Record> {
        Arc::new(Record::default())
    }

    /// Run `fut` with this record as the current one. Not an `async fn`: one
    /// would hold `fut` twice (as its argument and inside the scope).
    pub fn scope<F: std::future::Future>(
        self: &Arc<Self>,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> + use<F> {
        CURRENT.scope(self.clone(), fut)
    }

    pub fn take(&self) -> Facts {
        std::mem::take(&mut *self.facts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn update(&self, f: impl FnOnce(&mut Facts)) {
        f(&mut self.facts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Add to the current request's record, if there is one.
pub fn note(f: impl FnOnce(&mut Facts)) {
    let _ = CURRENT.try_with(|r| r.update(f));
}

/// Whether a request is being recorded here (to skip work nobody reads).
pub fn recording() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_reach_the_record_of_their_own_request_only() {
        let a = Record::new();
        let b = Record::new();
        let fa = a.scope(async {
            note(|f| f.target = Some("a".into()));
            tokio::task::yield_now().await;
            note(|f| f.upstream += Duration::from_millis(1));
        });
        let fb = b.scope(async { note(|f| f.target = Some("b".into())) });
        tokio::join!(fa, fb);
        note(|f| f.target = Some("nobody".into()));
        assert_eq!(a.take().target.as_deref(), Some("a"));
        assert_eq!(b.take().target.as_deref(), Some("b"));
        assert!(!recording());
    }
}
