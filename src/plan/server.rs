//! A server's configuration as one typed value: what enters the key of every measure
//! that uses the server, and the only description the launcher
//! (`exec::service`) reads to build its command line. One derivation, so that a
//! launch flag cannot be missing from the key (a stale cache) nor a key field go
//! unlaunched (needless reruns).
//!
//! Serialized, it is the `server` part of a measure's preimage (field names in
//! kebab-case, absent options left out, as the keys have always been written). The
//! launch context that does not change what is measured (a fixed port, the name of
//! the variable that holds the key) rides along unhashed.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Backend, SimParams};

/// One server: the model it serves and how it is started or reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerConfig {
    #[serde(serialize_with = "backend_name")]
    pub backend: Backend,
    /// The model path or name the server loads.
    pub model: String,
    /// The name requests ask for.
    pub served_name: String,
    /// GPUs the model asks for, when its table says (else the tensor-parallel size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(flatten)]
    pub launch: Launch,
    /// The server's OpenTelemetry spans are received and joined to the requests: the
    /// server is started with an OTLP endpoint (`traces`).
    #[serde(skip_serializing_if = "is_false")]
    pub traces: bool,
    /// Requests carry a W3C `traceparent` (`send-traceparent`).
    #[serde(skip_serializing_if = "is_false")]
    pub send_traceparent: bool,
    /// Launch context, not hashed: where the OTLP receiver of an `endpoint` server
    /// listens (`otlp-receiver`; none: a free port on 127.0.0.1).
    #[serde(skip)]
    pub otlp_receiver: Option<std::net::SocketAddr>,
    /// Launch context, not hashed: a fixed port (`port` in the model's table).
    #[serde(skip)]
    pub port: Option<u16>,
    /// Launch context, not hashed: the variable holding the key (`api-key-env`); its
    /// value is read when the server starts, and never written anywhere.
    #[serde(skip)]
    pub api_key_env: Option<String>,
}

/// How the server comes to be, by backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Launch {
    /// The built-in simulator, with its model of latency.
    Sim { sim: SimParams },
    /// A process `pipeline` starts: `vllm serve`, or the model's `command`.
    Process(Process),
    /// A server someone else runs, or a hosted API (none: the API's own address).
    Remote { url: Option<String> },
}

/// A launched server process (`vllm` or `command`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Process {
    pub tensor_parallel_size: u32,
    pub dtype: String,
    pub quantization: Option<String>,
    /// `[server] extra-args`, the variant's, then the server-flag axes' flags and
    /// values; a secret flag's value as `[redacted N]`.
    pub extra_args: Vec<String>,
    /// vLLM's `--limit-mm-per-prompt`, as its JSON: `{"image": N}` or `{"video": N}`
    /// (none for a `command` server, which counts no images).
    pub limit_mm_per_prompt: BTreeMap<String, Option<u64>>,
    /// vLLM's `--media-io-kwargs`: `{"video": {"num_frames": -1}}` when frames go as
    /// one video (every frame kept; vLLM samples 32 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_io_kwargs: Option<BTreeMap<String, BTreeMap<String, i64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_caching: Option<bool>,
    /// The model's `command` template (backend `command`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn backend_name<S: serde::Serializer>(b: &Backend, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

impl ServerConfig {
    /// The key's `server` part: this value, serialized.
    pub fn key(&self) -> Value {
        // Serializing plain strings, numbers, options and maps cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The launched process's settings, for `vllm` and `command` servers.
    pub fn process(&self) -> Option<&Process> {
        match &self.launch {
            Launch::Process(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_config_as_it_was_always_written() {
        let config = ServerConfig {
            backend: Backend::Vllm,
            model: "Qwen/Qwen2.5-VL-3B-Instruct-AWQ".into(),
            served_name: "qwen-3b".into(),
            gpus: None,
            launch: Launch::Process(Process {
                tensor_parallel_size: 2,
                dtype: "auto".into(),
                quantization: None,
                extra_args: vec!["--api-key".into(), "[redacted 1]".into()],
                limit_mm_per_prompt: BTreeMap::from([("image".to_string(), Some(60))]),
                media_io_kwargs: None,
                max_model_len: Some(32768),
                prefix_caching: None,
                command: None,
            }),
            port: Some(8000),
            api_key_env: Some("VLLM_KEY".into()),
            traces: false,
            send_traceparent: false,
            otlp_receiver: None,
        };
        // Sorted keys (the preimage's canonical form), options left out when unset,
        // the launch context (port, key variable) not at all.
        assert_eq!(
            config.key().to_string(),
            r#"{"backend":"vllm","dtype":"auto","extra-args":["--api-key","[redacted 1]"],"limit-mm-per-prompt":{"image":60},"max-model-len":32768,"model":"Qwen/Qwen2.5-VL-3B-Instruct-AWQ","quantization":null,"served-name":"qwen-3b","tensor-parallel-size":2}"#
        );
        let remote = ServerConfig {
            backend: Backend::Openai,
            launch: Launch::Remote { url: None },
            port: None,
            api_key_env: None,
            ..config.clone()
        };
        assert_eq!(
            remote.key().to_string(),
            r#"{"backend":"openai","model":"Qwen/Qwen2.5-VL-3B-Instruct-AWQ","served-name":"qwen-3b","url":null}"#
        );
        // Tracing is a server setting; where the receiver listens is not.
        let traced = ServerConfig { traces: true, send_traceparent: true, otlp_receiver: "127.0.0.1:4318".parse().ok(), ..config };
        let key = traced.key().to_string();
        assert!(key.contains(r#""send-traceparent":true"#) && key.contains(r#""traces":true"#) && !key.contains("4318"), "{key}");
    }
}
