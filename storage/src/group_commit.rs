//! Group commit: concurrent writers share fsyncs.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::StoreError;

/// Lets many threads wait for durability while only one fsync runs at a time, and every fsync
/// covers everyone who was waiting when it started.
///
/// A caller takes a ticket after its writes returned. If an fsync is running it may have
/// started before those writes, so the caller waits for the next one; the first waiter to find
/// no fsync running starts one that covers every ticket handed out so far. Under load, one
/// fsync therefore acknowledges a whole batch of writers.
///
/// After a failed fsync the commit is poisoned: what reached the disk is unknown, and retrying
/// an fsync can report success for data the kernel already dropped.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct State {
    tickets_issued: u64,
    tickets_synced: u64,
    syncing: bool,
    poisoned: bool,
}

impl GroupCommit {
    /// A fresh group commit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns once `fsync` has run, in full, after this call started.
    pub fn sync(&self, fsync: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.tickets_issued += 1;
        let ticket = state.tickets_issued;
        loop {
            if state.poisoned {
                return Err(StoreError::Poisoned);
            }
            if state.tickets_synced >= ticket {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|poison| poison.into_inner());
                continue;
            }
            state.syncing = true;
            let covers = state.tickets_issued;
            drop(state);
            let result = fsync();
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.tickets_synced = covers,
                Err(_) => state.poisoned = true,
            }
            self.synced.notify_all();
            result?;
        }
    }

    /// Whether an fsync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (only plain fields), so a poisoned mutex
        // is safe to keep using.
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn concurrent_writers_share_fsyncs() {
        let commit = Arc::new(GroupCommit::new());
        let fsyncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (commit, fsyncs) = (commit.clone(), fsyncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        commit
                            .sync(|| {
                                fsyncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(2));
                                Ok(())
                            })
                            .expect("sync");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        let fsyncs = fsyncs.load(Ordering::SeqCst);
        assert!(fsyncs < 320, "320 syncs should share fsyncs, ran {fsyncs}");
    }

    #[test]
    fn a_sync_waits_for_an_fsync_that_started_after_it() {
        // Each fsync records the highest write counter it saw; every sync must return only
        // after an fsync that saw its write.
        let commit = Arc::new(GroupCommit::new());
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, written, durable) = (commit.clone(), written.clone(), durable.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        commit
                            .sync(|| {
                                let seen = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_micros(200));
                                durable.fetch_max(seen, Ordering::SeqCst);
                                Ok(())
                            })
                            .expect("sync");
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
    }

    #[test]
    fn a_failed_fsync_poisons_every_later_sync() {
        let commit = GroupCommit::new();
        let failure = commit.sync(|| Err(StoreError::Io(std::io::Error::other("disk gone"))));
        assert!(matches!(failure, Err(StoreError::Io(_))));
        assert!(matches!(commit.sync(|| Ok(())), Err(StoreError::Poisoned)));
        assert!(commit.is_poisoned());
    }
}
