//! A bounded map from a principal (plus a key of the caller's choosing) to a
//! value: what a data-plane stage works out once per caller and reuses on
//! every call. A lookup hashes a few strings and compares them; it never
//! clones or serialises the principal.

use super::Principal;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};

pub(crate) struct ByPrincipal<K, V> {
    hasher: RandomState,
    by_hash: HashMap<u64, Vec<(Principal, K, V)>>,
    len: usize,
    max: usize,
}

impl<K: Hash + PartialEq, V> ByPrincipal<K, V> {
    /// At most `max` entries; a full map starts over (what it holds can always
    /// be worked out again).
    pub fn new(max: usize) -> Self {
        ByPrincipal {
            hasher: RandomState::new(),
            by_hash: HashMap::new(),
            len: 0,
            max: max.max(1),
        }
    }

    /// Everything but the principal's free-form attributes goes into the
    /// hash; equality compares those too.
    fn hash<Q: Hash + ?Sized>(&self, p: &Principal, key: &Q) -> u64 {
        let mut h = self.hasher.build_hasher();
        (&p.user, &p.agent, &p.tenant, &p.groups, &p.scopes).hash(&mut h);
        std::mem::discriminant(&p.method).hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    /// The value for `p` and a key equal to `key` (`Q` hashes as `K` does).
    pub fn get<Q>(&self, p: &Principal, key: &Q) -> Option<&V>
    where
        Q: Hash + ?Sized,
        K: PartialEq<Q>,
    {
        let bucket = self.by_hash.get(&self.hash(p, key))?;
        bucket
            .iter()
            .find(|(q, k, _)| q == p && k == key)
            .map(|(_, _, v)| v)
    }

    pub fn insert(&mut self, p: &Principal, key: K, value: V) {
        let hash = self.hash(p, &key);
        if let Some(slot) = self
            .by_hash
            .get_mut(&hash)
            .and_then(|b| b.iter_mut().find(|(q, k, _)| q == p && *k == key))
        {
            slot.2 = value;
            return;
        }
        if self.len >= self.max {
            self.by_hash.clear();
            self.len = 0;
        }
        self.by_hash
            .entry(hash)
            .or_default()
            .push((p.clone(), key, value));
        self.len += 1;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::anonymous(name)
    }

    #[test]
    fn finds_exactly_the_same_principal_and_key() {
        let mut m: ByPrincipal<u8, &str> = ByPrincipal::new(10);
        m.insert(&user("alice"), 1, "a1");
        m.insert(&user("bob"), 1, "b1");
        assert_eq!(m.get(&user("alice"), &1), Some(&"a1"));
        assert_eq!(m.get(&user("bob"), &1), Some(&"b1"));
        assert_eq!(m.get(&user("alice"), &2), None);
        // Attributes are not hashed but are compared.
        let mut admin = user("alice");
        admin.attrs.insert("role".into(), "admin".into());
        assert_eq!(m.get(&admin, &1), None);
        m.insert(&admin, 1, "admin");
        assert_eq!(m.get(&admin, &1), Some(&"admin"));
        assert_eq!(m.get(&user("alice"), &1), Some(&"a1"));
        m.insert(&user("alice"), 1, "a1 again");
        assert_eq!(m.get(&user("alice"), &1), Some(&"a1 again"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn stays_bounded() {
        let mut m: ByPrincipal<(), usize> = ByPrincipal::new(3);
        for i in 0..10 {
            m.insert(&user(&format!("u{i}")), (), i);
            assert!(m.len() <= 3);
        }
        assert_eq!(m.get(&user("u9"), &()), Some(&9));
    }
}
