//! One JSON object per line on standard output (for containers whose log
//! collector reads stdout). Not available with `toolgate stdio`, where stdout
//! is the MCP stream.

use super::{Line, Sink};
use futures::future::BoxFuture;
use std::io::Write as _;

pub struct Stdout;

impl Sink for Stdout {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn write<'a>(&'a mut self, events: &'a [Line]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let text = super::json_lines(events);
            tokio::task::spawn_blocking(move || {
                let mut out = std::io::stdout().lock();
                out.write_all(&text)?;
                out.flush()
            })
            .await??;
            Ok(())
        })
    }
}
