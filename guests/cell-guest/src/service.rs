//! Guest services: a guest exports a capability of its own ([`serve`]), its parent gets it
//! ([`Process::service`]) and may hand it to other children ([`SpawnBuilder::grant_service`]),
//! who find it by name ([`Caps::services`]). Calls go through the host, which proxies them
//! between the two guests' connections; the service dies with the process serving it.

use std::future::Future;

use anyhow::{Context as _, Result};
use capnp::capability::FromClientHook;

use crate::caps::{Caps, Process, SpawnBuilder};

/// Runs a guest like [`crate::run`], serving `service` (any Cap'n Proto interface of the
/// guest's own schema, as its typed client, e.g. `capnp_rpc::new_client(MyServer)`) to the
/// host as this process's bootstrap capability: its parent gets it from `Process.service`.
pub fn serve<S, F, Fut>(service: S, f: F) -> !
where
    S: FromClientHook,
    F: FnOnce(Caps) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = capnp::capability::Client::new(service.into_client_hook());
    crate::run_serving(Some(client), f)
}

/// A service handed to this process under a name.
#[derive(Clone)]
pub struct Service {
    /// The name the parent gave it.
    pub name: String,
    client: capnp::capability::Client,
}

impl Service {
    /// The service as the interface `T` (the typed client of the schema both guests share).
    pub fn cast<T: FromClientHook>(&self) -> T {
        self.client.clone().cast_to()
    }
}

impl Caps {
    /// The services handed to this process by its parent, in order.
    pub async fn services(&self) -> Result<Vec<Service>> {
        let response = self
            .session()
            .services_request()
            .send()
            .promise
            .await
            .context("session.services")?;
        let list = response.get()?.get_services()?;
        list.iter()
            .map(|entry| {
                Ok(Service {
                    name: entry.get_name()?.to_string()?,
                    client: entry.get_service().get_as_capability()?,
                })
            })
            .collect()
    }

    /// The service named `name`, cast to `T`; fails if the parent granted none by that name.
    pub async fn service<T: FromClientHook>(&self, name: &str) -> Result<T> {
        self.services()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.cast())
            .with_context(|| format!("no service named {name:?} was granted"))
    }
}

impl Process {
    /// The capability this child serves (see [`serve`]), as the interface `T`. Calls fail with
    /// `dead` once the child has ended, `unsupported` if it serves nothing.
    pub fn service<T: FromClientHook>(&self) -> T {
        let request = self.client().service_request();
        request.send().pipeline.get_service().as_cap().cast_to()
    }
}

impl SpawnBuilder<'_> {
    /// Lets the child call `service` (any typed client this process holds: from
    /// [`Process::service`] or [`Caps::services`]); it finds it as `name`.
    pub fn grant_service<T: FromClientHook + Clone>(mut self, name: &str, service: &T) -> Self {
        self.request.grants.services.push(cell_proto::ServiceGrant {
            name: name.to_string(),
            service: capnp::capability::Client::new(service.clone().into_client_hook()),
        });
        self
    }
}
