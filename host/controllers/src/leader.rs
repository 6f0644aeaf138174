//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does:
//! the holder renews the Lease every `renew` interval; a candidate takes it over once it has
//! gone unrenewed for `lease_duration`. Every write carries the Lease's resourceVersion, so two
//! candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Who competes for which Lease, and how fast.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This candidate's identity (the holder it writes).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and candidates retry.
    pub retry: Duration,
}

impl LeaderElection {
    /// The controller manager's election: Lease `kube-system/capstan-controller-manager`,
    /// 15 s validity, 2 s retries.
    #[must_use]
    pub fn controller_manager(identity: impl Into<String>) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: "capstan-controller-manager".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }

    /// Campaigns until `stop` turns true, then gives the Lease up if it holds it (so another
    /// candidate takes over at once instead of waiting for it to expire). The returned receiver
    /// is `true` while this candidate leads; the handle ends once the Lease is released.
    #[must_use]
    pub fn run(
        self,
        client: kube::Client,
        mut stop: watch::Receiver<bool>,
    ) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = watch::channel(false);
        let task = tokio::spawn(async move {
            let api: Api<Lease> = Api::namespaced(client, &self.namespace);
            loop {
                let leading = match self.try_acquire_or_renew(&api).await {
                    Ok(leading) => leading,
                    Err(e) => {
                        tracing::debug!(lease = %self.name, error = %e, "leader election round failed");
                        false
                    }
                };
                if *sender.borrow() != leading {
                    tracing::info!(lease = %self.name, identity = %self.identity, leading, "leadership changed");
                    sender.send_replace(leading);
                }
                let stopping = tokio::select! {
                    // Told to stop, or the channel closed (its owner is gone): stop either way.
                    stopped = stop.wait_for(|s| *s) => {
                        drop(stopped);
                        true
                    }
                    () = tokio::time::sleep(self.retry) => false,
                };
                if stopping {
                    if let Err(e) = self.release(&api).await {
                        tracing::warn!(lease = %self.name, error = %e, "cannot release the Lease");
                    }
                    sender.send_replace(false);
                    return;
                }
            }
        });
        (receiver, task)
    }

    /// Gives the Lease up when this candidate holds it: no holder, valid for one second.
    pub async fn release(&self, api: &Api<Lease>) -> Result<(), kube::Error> {
        let Some(mut lease) = api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        api.replace(&self.name, &PostParams::default(), &lease).await?;
        tracing::info!(lease = %self.name, identity = %self.identity, "released the Lease");
        Ok(())
    }

    /// One round: true when this candidate holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let valid_for = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = released
            || spec.renew_time.as_ref().is_none_or(|renewed| renewed.0.as_second() + valid_for < now.as_second());
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
