//! `discovery.seeds`: client URLs of a running cluster to join through. They name no peers; they
//! only say where an existing cluster can be asked.

use super::{Discovered, Source};
use crate::model::url::EtcdUrl;
use anyhow::Result;
use futures::future::BoxFuture;

pub(crate) struct SeedSource {
    seeds: Vec<EtcdUrl>,
}

impl SeedSource {
    pub(crate) fn new(seeds: &[EtcdUrl]) -> Self {
        SeedSource {
            seeds: seeds.to_vec(),
        }
    }
}

impl Source for SeedSource {
    fn describe(&self) -> String {
        "discovery.seeds".into()
    }

    fn discover(&self) -> BoxFuture<'_, Result<Discovered>> {
        Box::pin(async move {
            Ok(Discovered {
                client_endpoints: self.seeds.clone(),
                ..Default::default()
            })
        })
    }
}
