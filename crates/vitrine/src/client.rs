//! The HTTP client behind every client command: where the server is, which
//! key to send, and API errors turned into one-line messages.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server [default: from the client configuration, else http://127.0.0.1:8080].
    #[arg(long, global = true, help_heading = "Client options (how to reach a server)", env = "VITRINE_URL")]
    pub url: Option<String>,
    /// The API key [default: from the client configuration].
    #[arg(
        long,
        global = true,
        help_heading = "Client options (how to reach a server)",
        env = "VITRINE_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// The client configuration file that `signup` writes
    /// [default: $XDG_CONFIG_HOME/vitrine/client.toml or ~/.config/vitrine/client.toml].
    #[arg(long, global = true, help_heading = "Client options (how to reach a server)", env = "VITRINE_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Print the server's JSON instead of tables, for scripts.
    #[arg(long, global = true, help_heading = "Client options (how to reach a server)")]
    pub json: bool,
}

/// What `signup` saves so that later commands need no flags.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    pub url: Option<String>,
    pub key: Option<String>,
}

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

impl ClientArgs {
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.client_config {
            return Ok(path.clone());
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(std::env::var_os("HOME").context("set HOME or --client-config")?).join(".config"),
        };
        Ok(base.join("vitrine").join("client.toml"))
    }

    pub fn load_config(&self) -> anyhow::Result<ClientConfig> {
        let path = self.config_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("the client configuration {} is not valid", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Flags and environment first, then the configuration file.
    pub fn client(&self) -> anyhow::Result<Client> {
        let saved = self.load_config()?;
        let url = self.url.clone().or(saved.url).unwrap_or_else(|| DEFAULT_URL.to_owned());
        let key = self.key.clone().or(saved.key);
        Client::new(url, key)
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(url: String, key: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().build().context("cannot create the HTTP client")?;
        Ok(Client { http, base: url.trim_end_matches('/').to_owned(), key })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub fn require_key(&self) -> anyhow::Result<()> {
        if self.key.is_none() {
            bail!("no API key: run 'vitrine signup NAME', or pass --key or VITRINE_KEY");
        }
        Ok(())
    }

    /// Sends a request and returns the JSON body of a 2xx answer; any other
    /// answer becomes an error with the server's code and message.
    pub async fn send_json(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = self.send(request).await?;
        response.json().await.context("the server's answer is not JSON")
    }

    /// Sends a request and reads the JSON body of a 2xx answer as the
    /// server's own wire type `T`; any other answer becomes an error with
    /// the server's code and message.
    pub async fn send_as<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let body = response.bytes().await.context("the server's answer broke off")?;
        serde_json::from_slice(&body)
            .with_context(|| format!("the server's answer is not the {} this client reads", std::any::type_name::<T>()))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        // The API's error body (`{"error": {"code", "message"}}`), when the
        // answer is one (a proxy's may not be).
        #[derive(serde::Deserialize, Default)]
        struct ErrorAnswer {
            error: ErrorFields,
        }
        #[derive(serde::Deserialize, Default)]
        struct ErrorFields {
            code: Option<String>,
            message: Option<String>,
        }
        let body: ErrorAnswer = response.json().await.unwrap_or_default();
        Err(Refused { status, code: body.error.code, message: body.error.message }.into())
    }
}

/// A non-2xx answer: its status, and the server's error code and message.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl Refused {
    /// Whether sending the same again will be refused the same way (a 4xx
    /// but a conflict, too many requests, or a body that broke off).
    pub fn is_for_good(&self) -> bool {
        (400..500).contains(&self.status)
            && !matches!(self.status, 408 | 409 | 429)
            && self.code.as_deref() != Some("upload_interrupted")
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, "{message} ({code}, HTTP {})", self.status),
            _ => write!(f, "the server answered HTTP {}", self.status),
        }
    }
}

impl std::error::Error for Refused {}
