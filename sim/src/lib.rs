//! The deterministic simulator: many node cores, a virtual clock, a simulated network and
//! fault injection, all from one seed (ARCHITECTURE §10).
//!
//! Placeholder: the simulator's first version arrives with the membership issue, because
//! membership is the first behaviour that must be proven under partitions. The foundation's
//! single-node core is already sans-IO and driven with explicit `now` arguments, and the
//! in-memory store's crash model (`shoal_storage::MemStore::crash`) is what the simulator
//! will use to lose unsynced writes.
