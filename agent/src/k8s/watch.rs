//! The node-scoped pod watch (kube-runtime's watcher: list, then watch, re-listing
//! with backoff after errors).

use std::{collections::HashMap, sync::Arc};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt as _},
    Api, Client,
};

use super::{PodIndex, PodMeta};
use crate::shutdown::Shutdown;

/// Pod UID and what events say about it; `None` for a pod without UID or name
/// (never the case for pods the API server returns, but the fields are optional).
pub fn pod_meta(pod: &Pod) -> Option<(String, PodMeta)> {
    let m = &pod.metadata;
    let uid = m.uid.clone()?;
    Some((
        uid,
        PodMeta {
            name: m.name.clone()?,
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            labels: m.labels.clone().unwrap_or_default(),
        },
    ))
}

/// Applies one watcher event. A re-list (`Init` … `InitDone`) is staged in `relist`
/// and swapped in at the end, so readers never see a half-filled index.
pub fn apply(index: &PodIndex, relist: &mut Option<HashMap<String, Arc<PodMeta>>>, ev: watcher::Event<Pod>) {
    match ev {
        watcher::Event::Init => *relist = Some(HashMap::new()),
        watcher::Event::InitApply(pod) => {
            if let (Some(staged), Some((uid, meta))) = (relist.as_mut(), pod_meta(&pod)) {
                staged.insert(uid, Arc::new(meta));
            }
        }
        watcher::Event::InitDone => {
            if let Some(staged) = relist.take() {
                index.replace(staged);
            }
        }
        watcher::Event::Apply(pod) => {
            if let Some((uid, meta)) = pod_meta(&pod) {
                index.insert(uid, meta);
            }
        }
        watcher::Event::Delete(pod) => {
            if let Some(uid) = &pod.metadata.uid {
                index.remove(uid);
            }
        }
    }
}

pub async fn run(node: String, index: PodIndex, mut shutdown: Shutdown) {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the Kubernetes API: pod names are not resolved");
            return;
        }
    };
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(pods, config).default_backoff().boxed();
    let mut relist = None;
    tracing::info!(%node, "watching this node's pods");
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => apply(&index, &mut relist, ev),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error (retrying with backoff)"),
                None => break,
            },
            _ = shutdown.wait() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(uid: &str, name: &str, ns: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn maps_name_namespace_and_labels_by_uid() {
        let (uid, meta) = pod_meta(&pod("u1", "mcp-fs-7d9", "agents", &[("app", "mcp-fs")])).unwrap();
        assert_eq!(uid, "u1");
        assert_eq!(meta.name, "mcp-fs-7d9");
        assert_eq!(meta.namespace, "agents");
        assert_eq!(
            meta.labels,
            BTreeMap::from([("app".to_string(), "mcp-fs".to_string())])
        );
        let mut nameless = pod("u2", "x", "y", &[]);
        nameless.metadata.name = None;
        assert!(pod_meta(&nameless).is_none());
    }

    #[test]
    fn watch_events_keep_the_index_current() {
        let index = PodIndex::default();
        let mut relist = None;
        apply(
            &index,
            &mut relist,
            watcher::Event::Apply(pod("u1", "a", "ns", &[])),
        );
        assert_eq!(index.get("u1").unwrap().name, "a");
        let g = index.generation();
        apply(
            &index,
            &mut relist,
            watcher::Event::Apply(pod("u1", "a2", "ns", &[])),
        );
        assert_eq!(index.get("u1").unwrap().name, "a2");
        assert!(index.generation() > g);
        apply(
            &index,
            &mut relist,
            watcher::Event::Delete(pod("u1", "a2", "ns", &[])),
        );
        assert!(index.get("u1").is_none());
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_done() {
        let index = PodIndex::default();
        let mut relist = None;
        apply(
            &index,
            &mut relist,
            watcher::Event::Apply(pod("gone", "old", "ns", &[])),
        );
        apply(&index, &mut relist, watcher::Event::Init);
        apply(
            &index,
            &mut relist,
            watcher::Event::InitApply(pod("u2", "b", "ns", &[])),
        );
        // Mid re-list, readers still see the previous state.
        assert!(index.get("gone").is_some());
        assert!(index.get("u2").is_none());
        apply(&index, &mut relist, watcher::Event::InitDone);
        assert!(
            index.get("gone").is_none(),
            "pods missing from the re-list are dropped"
        );
        assert_eq!(index.get("u2").unwrap().name, "b");
        assert_eq!(index.len(), 1);
    }
}
