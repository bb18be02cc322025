//! Hash maps and sets for the pipeline's hot loops (ids while parsing, meter keys in dedup):
//! `foldhash`'s fixed-seed hasher, several times faster than the standard library's SipHash on
//! short keys. SipHash resists keys crafted to collide; here keys are ids from the log and keys
//! the pipeline made, and a flood of crafted ids could at worst slow one run down, never change
//! its result.

use std::collections::{HashMap, HashSet};

/// The hasher state: fixed seed, so a run's behavior does not depend on chance.
pub type Fast = foldhash::fast::FixedState;

/// A [`HashMap`] with the fast hasher.
pub type FastMap<K, V> = HashMap<K, V, Fast>;

/// A [`HashSet`] with the fast hasher.
pub type FastSet<T> = HashSet<T, Fast>;
