//! uid → user name, cached (names come from the host's NSS databases).

use std::{collections::HashMap, sync::Arc};

#[derive(Default)]
pub struct UserNames {
    cache: HashMap<u32, Option<Arc<str>>>,
}

const MAX_CACHED: usize = 4096;

impl UserNames {
    pub fn name(&mut self, uid: u32) -> Option<Arc<str>> {
        if let Some(n) = self.cache.get(&uid) {
            return n.clone();
        }
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| Arc::from(u.name));
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(uid, name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_is_root() {
        assert_eq!(super::UserNames::default().name(0).as_deref(), Some("root"));
    }
}
