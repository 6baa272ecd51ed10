//! The OpenAI-compatible chat-completions call (`POST <base>/chat/completions`) that
//! Ollama serves, with the demo's fixed sampling settings.

use std::time::Duration;

use pyro_core::{Error, Result};
use serde_json::{json, Value};

/// How long one completion may take (small local models on CPUs are slow).
const TIMEOUT: Duration = Duration::from_secs(90);

/// The one-line failure for every way of not reaching the model.
pub const UNREACHABLE: &str = "failed to call Ollama. Ensure `ollama serve` is running and the model is available.";

/// A chat-completions endpoint and the model asked.
pub struct Chat {
    http: reqwest::Client,
    url: String,
    model: String,
}

impl Chat {
    /// The endpoint under `base_url` (e.g. `http://localhost:11434/v1`) for `model`.
    pub fn new(base_url: &str, model: &str) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| Error::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, url: format!("{}/chat/completions", base_url.trim_end_matches('/')), model: model.into() })
    }

    /// Asks for the next assistant message given `messages` and the `tools` it may call
    /// (`tool_choice: auto`, temperature 0). Any transport failure, non-success status
    /// or reply without `choices[0].message` is [`UNREACHABLE`].
    pub async fn complete(&self, messages: &[Value], tools: &[Value]) -> Result<Value> {
        let body = json!({"model": self.model, "messages": messages, "tools": tools, "tool_choice": "auto", "temperature": 0});
        let reply = async {
            let response = self.http.post(&self.url).json(&body).send().await?.error_for_status()?;
            response.json::<Value>().await
        };
        let mut reply = reply.await.map_err(|_| Error::Unavailable(UNREACHABLE.into()))?;
        match reply.pointer_mut("/choices/0/message").map(Value::take) {
            Some(message @ Value::Object(_)) => Ok(message),
            _ => Err(Error::Unavailable(UNREACHABLE.into())),
        }
    }
}
