//! Which layers a collection must keep beyond the chains the controller says are in use:
//! those a load, import, commit or build added and whose image the controller has not
//! recorded yet (leased), and those released while a collection was deciding.
//!
//! ```text
//!  add layers ─► grant(conn, chains) = lease ──── controller records the image ───►
//!  release(lease): still kept by every collection begun before it (its records may
//!  predate the image), dropped once none is open
//!  begin(conn) = ticket ─► controller reads chains in use ─► protected(ticket) ─► end
//! ```
//!
//! Pure bookkeeping: one counter orders grants, releases and tickets; the store calls it
//! under its own mutex and does the removal.

use std::collections::BTreeMap;
use wharf_protocol::agent::image::{CollectTicket, LeaseId};
use wharf_protocol::DiffId;

/// A connection of a controller to this agent, as the server numbers them.
pub type ConnId = u64;

/// Why a lease or collection call cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    /// `Collect` named a ticket never begun, already ended, or of a closed connection.
    #[error("no collection {0} is open on this host")]
    NoSuchTicket(u64),
}

#[derive(Debug)]
struct Lease {
    conn: ConnId,
    chains: Vec<Vec<DiffId>>,
}

/// Leases and open collections of one host.
#[derive(Debug, Default)]
pub struct Leases {
    next: u64,
    live: BTreeMap<LeaseId, Lease>,
    /// Released leases' chains, by the moment of their release.
    released: Vec<(u64, Vec<Vec<DiffId>>)>,
    /// Open collections, by the moment they began, with their connection.
    tickets: BTreeMap<u64, ConnId>,
}

impl Leases {
    fn tick(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Hold `chains` (DiffID chains, bottom first) for connection `conn`.
    pub fn grant(&mut self, conn: ConnId, chains: Vec<Vec<DiffId>>) -> LeaseId {
        let id = LeaseId(self.tick());
        self.live.insert(id, Lease { conn, chains });
        id
    }

    /// Let lease `id` go; false when it was not held (released twice, or its connection
    /// closed).
    pub fn release(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.live.remove(&id) else {
            return false;
        };
        self.retire(lease.chains);
        true
    }

    fn retire(&mut self, chains: Vec<Vec<DiffId>>) {
        // Only a collection already open may have read records older than the image.
        if !self.tickets.is_empty() {
            let at = self.tick();
            self.released.push((at, chains));
        }
    }

    /// Begin a collection for `conn`; the controller reads the chains in use after this.
    pub fn begin(&mut self, conn: ConnId) -> CollectTicket {
        let t = self.tick();
        self.tickets.insert(t, conn);
        CollectTicket(t)
    }

    /// The chains collection `ticket` must keep beyond those in use: every live lease and
    /// every lease released after the collection began.
    pub fn protected(&self, ticket: CollectTicket) -> Result<Vec<Vec<DiffId>>, LeaseError> {
        if !self.tickets.contains_key(&ticket.0) {
            return Err(LeaseError::NoSuchTicket(ticket.0));
        }
        let live = self.live.values().flat_map(|l| l.chains.iter().cloned());
        let released = self
            .released
            .iter()
            .filter(|(at, _)| *at > ticket.0)
            .flat_map(|(_, c)| c.iter().cloned());
        Ok(live.chain(released).collect())
    }

    /// Collection `ticket` is over.
    pub fn end(&mut self, ticket: CollectTicket) {
        self.tickets.remove(&ticket.0);
        self.prune();
    }

    /// Connection `conn` closed: its leases are released and its collections ended.
    pub fn drop_connection(&mut self, conn: ConnId) {
        let ids: Vec<LeaseId> = self
            .live
            .iter()
            .filter(|(_, l)| l.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.release(id);
        }
        self.tickets.retain(|_, c| *c != conn);
        self.prune();
    }

    /// Forget released chains no open collection began before.
    fn prune(&mut self) {
        match self.tickets.keys().next().copied() {
            None => self.released.clear(),
            Some(oldest) => self.released.retain(|(at, _)| *at > oldest),
        }
    }

    /// How many leases are held (for tests and logs).
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

impl super::ImageStore {
    /// Remove every layer no chain of `in_use` needs and no lease of collection `ticket`
    /// keeps, then end the collection; blocking, call with the layer lock held
    /// exclusively so that no layer is put in place and leased meanwhile.
    pub fn collect(
        &self,
        ticket: CollectTicket,
        mut in_use: Vec<Vec<DiffId>>,
    ) -> Result<super::Collected, super::StoreError> {
        let protected = self.leases().protected(ticket);
        let res = protected.map_err(super::StoreError::from).and_then(|kept| {
            in_use.extend(kept);
            self.remove_unused_layers(&in_use)
        });
        self.leases().end(ticket);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::Digest;

    fn chain(b: &[u8]) -> Vec<DiffId> {
        vec![DiffId(Digest::of(b))]
    }

    #[test]
    fn a_live_lease_is_kept_by_every_collection() {
        let mut l = Leases::default();
        let lease = l.grant(1, vec![chain(b"a")]);
        let t = l.begin(1);
        assert_eq!(l.protected(t).unwrap(), vec![chain(b"a")]);
        l.end(t);
        assert!(l.release(lease));
        assert!(!l.release(lease), "a lease is released once");
        let t = l.begin(1);
        assert!(l.protected(t).unwrap().is_empty());
    }

    #[test]
    fn a_lease_released_during_a_collection_is_kept_by_it_only() {
        let mut l = Leases::default();
        let lease = l.grant(1, vec![chain(b"a")]);
        // The collection reads its records, then the image is recorded and released.
        let early = l.begin(2);
        l.release(lease);
        let late = l.begin(2);
        assert_eq!(l.protected(early).unwrap(), vec![chain(b"a")]);
        assert!(
            l.protected(late).unwrap().is_empty(),
            "a collection begun after the release reads the recorded image"
        );
        l.end(early);
        l.end(late);
        assert!(l.released.is_empty());
    }

    #[test]
    fn a_release_with_no_open_collection_is_forgotten_at_once() {
        let mut l = Leases::default();
        let lease = l.grant(1, vec![chain(b"a")]);
        l.release(lease);
        assert!(l.released.is_empty());
    }

    #[test]
    fn a_closed_connection_releases_its_leases_and_ends_its_collections() {
        let mut l = Leases::default();
        let mine = l.grant(1, vec![chain(b"a")]);
        l.grant(2, vec![chain(b"b")]);
        let other = l.begin(2);
        let t = l.begin(1);
        l.drop_connection(1);
        assert_eq!(l.live(), 1);
        assert!(!l.release(mine));
        assert_eq!(l.protected(t), Err(LeaseError::NoSuchTicket(t.0)));
        // The other connection's open collection still keeps what was released.
        let kept = l.protected(other).unwrap();
        assert!(kept.contains(&chain(b"a")) && kept.contains(&chain(b"b")));
    }

    #[test]
    fn a_collection_frees_no_leased_layer_nor_one_released_while_it_decided() {
        use crate::image::testutil::RawTar;
        use crate::image::ImageStore;
        use wharf_protocol::ChainId;
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let tar = RawTar::default().file("f", 0o644, b"data").finish();
        let ids = vec![DiffId(Digest::of(&tar))];
        let chain = ChainId::chain(&ids);
        s.unpack_layer(None, &chain[0], &ids[0], tar.as_slice())
            .unwrap();
        // A load put the layer in place and leased it; its image is not recorded yet.
        let lease = s.leases().grant(1, vec![ids.clone()]);
        let t = s.leases().begin(2);
        assert!(s.collect(t, vec![]).unwrap().layers.is_empty());
        assert!(s.has_layers(&ids));
        // A collection reads its records, then the image is recorded and the lease let go:
        // that collection still keeps the layer; one begun later (which reads the image)
        // decides alone.
        let t = s.leases().begin(2);
        s.leases().release(lease);
        assert!(s.collect(t, vec![]).unwrap().layers.is_empty());
        assert!(s.has_layers(&ids));
        let t = s.leases().begin(2);
        assert_eq!(s.collect(t, vec![]).unwrap().layers, chain);
        assert!(!s.has_layers(&ids));
    }
}
