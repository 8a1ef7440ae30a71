//! Pod metadata (name, namespace, labels) from the Kubernetes API, by pod UID.
//!
//! cgroup paths give each container's pod UID (`state::cgroup`); only the API knows
//! the pod's name, namespace and labels. When the agent runs in a cluster (the
//! in-cluster service account and `NODE_NAME` from the downward API), it watches the
//! pods of its own node only (`fieldSelector=spec.nodeName=…`), so its cost does not
//! grow with the cluster. Outside a cluster nothing is started.

#[cfg(feature = "kubernetes")]
mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use serde::Serialize;

use crate::shutdown::Shutdown;

/// What events say about a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Pods of this node by UID, written by the watcher, read by the state stage.
#[derive(Clone, Default)]
pub struct PodIndex {
    pods: Arc<RwLock<HashMap<String, Arc<PodMeta>>>>,
    /// Bumped on every change, so readers refresh only when something changed.
    generation: Arc<AtomicU64>,
}

impl PodIndex {
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods.read().expect("pod index lock").get(uid).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pods.read().expect("pod index lock").len()
    }

    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    fn insert(&self, uid: String, meta: PodMeta) {
        self.pods
            .write()
            .expect("pod index lock")
            .insert(uid, Arc::new(meta));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    fn remove(&self, uid: &str) {
        self.pods.write().expect("pod index lock").remove(uid);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces everything (after a full re-list).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    fn replace(&self, all: HashMap<String, Arc<PodMeta>>) {
        *self.pods.write().expect("pod index lock") = all;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The node to watch when running inside a cluster: `NODE_NAME` (downward API) and
/// the in-cluster API address must both be present.
pub fn in_cluster_node() -> Option<String> {
    std::env::var_os("KUBERNETES_SERVICE_HOST")?;
    match std::env::var("NODE_NAME") {
        Ok(n) if !n.is_empty() => Some(n),
        _ => {
            tracing::warn!(
                "in a Kubernetes cluster but NODE_NAME is not set: pod names are not resolved \
                 (set NODE_NAME from spec.nodeName, as packaging/kubernetes does)"
            );
            None
        }
    }
}

/// Starts watching this node's pods when in a cluster; `None` elsewhere (or when built
/// without the `kubernetes` feature).
pub fn spawn_pod_watch(shutdown: Shutdown) -> Option<PodIndex> {
    let node = in_cluster_node()?;
    #[cfg(feature = "kubernetes")]
    {
        let index = PodIndex::default();
        tokio::spawn(watch::run(node, index.clone(), shutdown));
        Some(index)
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = shutdown;
        tracing::warn!(%node, "built without the kubernetes feature: pod names are not resolved");
        None
    }
}
