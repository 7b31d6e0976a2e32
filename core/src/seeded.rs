//! Where chartsync's random ids and its "now" come from: automerge actor ids, record, chart
//! and storage ids, and `Timestamp::now`. In every build they come from the operating
//! system's random source and clock, unless a deterministic simulation
//! (`tests/tests/simulation.rs`) has seeded the thread it runs on, so that one seed replays a
//! run to the same change hashes (Bloom filters in automerge's sync branch on those hashes,
//! and a failure found once must come back on replay) and so that the simulation decides how
//! time passes.
//!
//! The seeded source is for simulations only. It lives on one thread, for as long as the
//! guard `seed_this_thread` returns; nothing in chartsync seeds a thread itself.

use std::cell::Cell;

thread_local! {
    /// The seeded source's state: `None` while this thread draws from the operating system.
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
    /// The simulated time, in Unix milliseconds, on a seeded thread.
    static CLOCK: Cell<Option<i64>> = const { Cell::new(None) };
}

/// While this lives, ids made on this thread come from its seed, and `Timestamp::now` is the
/// time it was set to (see the module's text).
#[must_use = "the thread is seeded only while the guard lives"]
pub struct Seeded {
    before: (Option<u64>, Option<i64>),
}

impl Seeded {
    /// What `Timestamp::now` answers on this thread from now on, in Unix milliseconds.
    pub fn set_clock(&self, unix_millis: i64) {
        CLOCK.with(|c| c.set(Some(unix_millis)));
    }
}

impl Drop for Seeded {
    fn drop(&mut self) {
        STATE.with(|s| s.set(self.before.0));
        CLOCK.with(|c| c.set(self.before.1));
    }
}

/// Seeds this thread's ids from `seed`, and starts its clock at `unix_millis`, until the
/// guard is dropped.
pub fn seed_this_thread(seed: u64, unix_millis: i64) -> Seeded {
    let ids = STATE.with(|s| s.replace(Some(seed)));
    let clock = CLOCK.with(|c| c.replace(Some(unix_millis)));
    Seeded {
        before: (ids, clock),
    }
}

/// The simulated time on a seeded thread, in Unix milliseconds.
pub fn clock() -> Option<i64> {
    CLOCK.with(|c| c.get())
}

/// The next 64 bits of the seeded source (splitmix64), if this thread is seeded.
fn next() -> Option<u64> {
    STATE.with(|s| {
        let state = s.get()?.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(Some(state));
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Some(z ^ (z >> 31))
    })
}

fn seeded_bytes() -> Option<[u8; 16]> {
    let (a, b) = (next()?, next()?);
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&a.to_le_bytes());
    bytes[8..].copy_from_slice(&b.to_le_bytes());
    Some(bytes)
}

/// A new UUID v4.
pub fn uuid_v4() -> uuid::Uuid {
    match seeded_bytes() {
        Some(bytes) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        None => uuid::Uuid::new_v4(),
    }
}

/// Gives a document that may write a seeded actor id when this thread is seeded; otherwise
/// it keeps the random one automerge gave it.
pub fn set_actor(doc: &mut automerge::Automerge) {
    if let Some(bytes) = seeded_bytes() {
        doc.set_actor(automerge::ActorId::from(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_makes_the_same_ids_again_and_others_do_not() {
        let first: Vec<uuid::Uuid> = {
            let _s = seed_this_thread(7, 0);
            (0..3).map(|_| uuid_v4()).collect()
        };
        let again: Vec<uuid::Uuid> = {
            let _s = seed_this_thread(7, 0);
            (0..3).map(|_| uuid_v4()).collect()
        };
        assert_eq!(first, again);
        assert_eq!(
            first.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
        assert!(first.iter().all(|u| u.get_version_num() == 4));
        // Unseeded (the guard dropped): random again.
        assert!(!first.contains(&uuid_v4()));
        let other = seed_this_thread(8, 1_000);
        assert_ne!(uuid_v4(), first[0]);
        assert_eq!(clock(), Some(1_000));
        other.set_clock(61_000);
        assert_eq!(crate::chart::Timestamp::now().unix(), 61);
        drop(other);
        assert_eq!(clock(), None);
    }
}
