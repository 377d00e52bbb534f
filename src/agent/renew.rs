//! Certificate renewal from a fresh read of the CA: what has less than a third of its lifetime
//! left or no longer covers this member's names is re-issued and replaced in place. etcd reads
//! its leaf certificates at every handshake, so those need no restart; it reads trusted CAs only
//! at start, so a changed CA restarts etcd (after a random pause, so that members do not all
//! restart at once). The agent endpoint's certificate is swapped too.

use super::Agent;
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};

impl Agent<'_> {
    /// `running`: etcd runs and is restarted when the CA changed (the heal loop); false before
    /// etcd starts. `material` receives the new client material when anything was renewed.
    pub(crate) async fn renew_certificates(
        &self,
        running: bool,
        material: &mut Option<ClientMaterial>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let identity = self.current_identity().await?;
        let source = crate::tls::source(cfg).await?;
        let plan = source
            .plan(cfg, &identity, time::OffsetDateTime::now_utc())
            .await?;
        if plan.changed().next().is_none() {
            return Ok(());
        }
        if plan.ca_changed && running {
            let pause = crate::util::retry::jitter(cfg.heal.interval);
            tracing::info!(
                ?pause,
                "the CA changed; renewing and restarting etcd after a random pause"
            );
            tokio::time::sleep(pause).await;
        }
        for f in plan.changed() {
            tracing::info!(file = %f.path.display(), reason = f.change.as_deref().unwrap_or(""), source = %source.describe(), "renewing certificate material");
        }
        let etcd_owner = crate::etcd::user::of_config(cfg)?.map(|u| u.ids());
        plan.apply(etcd_owner)?;
        super::metrics::heal_action(super::metrics::HealAction::Renew);
        *material = Some(ClientMaterial::from_dir(&cfg.tls.dir)?);
        if let Some(ep) = &self.observer.endpoint {
            ep.refresh(&ClientMaterial::peer_from_dir(&cfg.tls.dir)?)?;
        }
        if plan.ca_changed && running {
            self.manager.start(true).await?;
            tracing::warn!("the CA changed: restarted etcd so that it trusts the new CA (the previous one stays trusted for tls.ca_overlap)");
        }
        Ok(())
    }

    /// This member's identity as it runs: name and address from its record (or etcd's
    /// environment file), the SRV target name from discovery, the host name from the kernel.
    async fn current_identity(&self) -> Result<crate::tls::Identity> {
        let cfg = self.cfg;
        let me = super::converge::current_member(cfg)?;
        let peer_url = me.peer_url(cfg).to_string();
        let found = crate::discovery::read_all(&self.observer.sources).await;
        super::metrics::discovery_read(&found);
        let found = found.context("reading discovery for this member's names")?;
        let dns_name = found
            .peers
            .iter()
            .find(|p| p.peer_url.to_string() == peer_url)
            .and_then(|p| p.dns_name.clone());
        Ok(crate::tls::Identity::new(
            cfg,
            &me.name,
            me.ip,
            dns_name.as_deref(),
            crate::agent::observe::hostname().as_deref(),
        ))
    }
}
