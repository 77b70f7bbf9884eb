//! Certificates for a run (a CA, the control plane's server certificate, agent certificates)
//! in a temporary directory, and mutual-TLS gRPC channels to the ingest listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certs::{Overwrite, Store};
use shared::identity::AgentIdentity;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub struct Pki {
    pub store: Store,
    pub dir: PathBuf,
    pub ca_pem: String,
}

impl Pki {
    pub fn create(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("crosscheck-{label}-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::new(&dir);
        store.create_ca(&format!("{label} CA"), 2, Overwrite::Refuse)?;
        store.issue_server(&["localhost".into()], &["127.0.0.1".parse()?], 2)?;
        let ca_pem = std::fs::read_to_string(store.ca_cert())?;
        Ok(Self { store, dir, ca_pem })
    }

    /// An agent certificate and key, as PEM text.
    pub fn agent(&self, region: &str, agent_id: &str) -> anyhow::Result<(String, String)> {
        let issued =
            self.store.issue_agent(&AgentIdentity::new(region, agent_id).map_err(anyhow::Error::msg)?, 2)?;
        Ok((std::fs::read_to_string(&issued.cert)?, std::fs::read_to_string(&issued.key)?))
    }

    /// The control plane's TLS settings for this PKI.
    pub fn configure(&self, config: &mut control_plane::Config) {
        config.tls_ca = Some(self.store.ca_cert().display().to_string());
        config.tls_cert = Some(self.dir.join("server.pem").display().to_string());
        config.tls_key = Some(self.dir.join("server.key").display().to_string());
    }

    /// The same settings as `CROSSCHECK_*` environment variables, for a child process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CROSSCHECK_TLS_CA".into(), self.store.ca_cert().display().to_string()),
            ("CROSSCHECK_TLS_CERT".into(), self.dir.join("server.pem").display().to_string()),
            ("CROSSCHECK_TLS_KEY".into(), self.dir.join("server.key").display().to_string()),
        ]
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connected mutual-TLS channel to the ingest listener at `addr`.
pub async fn channel(addr: SocketAddr, ca_pem: &str, cert: &str, key: &str) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    Ok(Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .connect()
        .await?)
}
