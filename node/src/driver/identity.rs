//! The node's permanent id, made once and kept in the data directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::RngExt;
use shoal_storage::NodeId;

const NODE_ID_FILE: &str = "node_id";
const GENERATION_FILE: &str = "generation";
const STORE_LOST_FILE: &str = "store_lost";

/// Whether this data directory holds a node id: the node ran here before.
pub fn has_node_id(data_dir: &Path) -> bool {
    data_dir.join(NODE_ID_FILE).exists()
}

/// The marker of a lost store, if this node's store is lost: its identity is here from an
/// earlier run but its store is not (`store_exists`: a wiped or replaced disk), now or at an
/// earlier start whose refill has not finished. Written durably before the new store is
/// made, so a crash during the refill still knows; the node removes it once refilled.
pub fn store_lost_marker(data_dir: &Path, had_identity: bool, store_exists: bool) -> anyhow::Result<Option<PathBuf>> {
    let marker = data_dir.join(STORE_LOST_FILE);
    if had_identity && !store_exists && !marker.exists() {
        write_durably(data_dir, STORE_LOST_FILE, "this node's store was lost; it refills from its peers\n")?;
    }
    Ok(marker.exists().then_some(marker))
}

/// Reads the node id from `data_dir/node_id`, or makes a random one and writes it durably.
pub fn load_or_create_node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = u128::from_str_radix(text.trim(), 16)
                .with_context(|| format!("{} does not hold a node id (32 hex digits)", path.display()))?;
            Ok(NodeId(id))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId(rand::rng().random::<u128>());
            write_durably(data_dir, NODE_ID_FILE, &format!("{id}\n"))?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The generation of this start: greater than the previous run's (kept in
/// `data_dir/generation`) and at least `now_secs`, written durably before it is returned.
///
/// Every start is a new generation, so the cluster tells a restarted node from its previous
/// run. Seeding it with the clock (as Cassandra's gossip generation is) keeps it ahead of the
/// renewals SWIM made during the previous run, which are not written down.
pub fn next_generation(data_dir: &Path, now_secs: u64) -> anyhow::Result<u64> {
    let path = data_dir.join(GENERATION_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{} does not hold a generation number", path.display()))?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let next = previous
        .checked_add(1)
        .with_context(|| format!("{} holds the largest generation there is; remove it", path.display()))?
        .max(now_secs);
    write_durably(data_dir, GENERATION_FILE, &format!("{next}\n"))?;
    Ok(next)
}

/// Records that this run renewed its identity to `generation` (the cluster had declared it
/// down), so the next start takes a later one: a generation the cluster has seen go down or
/// leave is never used again.
pub fn save_renewed_generation(data_dir: &Path, generation: u64) -> anyhow::Result<()> {
    write_durably(data_dir, GENERATION_FILE, &format!("{generation}\n"))
}

/// Replaces `dir/name` with `contents` atomically and durably: a crash leaves the old file or
/// the new one, never a torn one.
fn write_durably(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_gone_under_a_kept_identity_is_marked_lost_until_the_marker_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(store_lost_marker(dir.path(), false, false).expect("first start"), None);
        assert_eq!(store_lost_marker(dir.path(), true, true).expect("a restart"), None);
        let marker = store_lost_marker(dir.path(), true, false).expect("wiped").expect("marked");
        // A crash before the refill ends: the store exists now, the marker stays.
        assert_eq!(store_lost_marker(dir.path(), true, true).expect("restart"), Some(marker.clone()));
        std::fs::remove_file(&marker).expect("refilled");
        assert_eq!(store_lost_marker(dir.path(), true, true).expect("after"), None);
    }

    #[test]
    fn the_node_id_is_made_once_and_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_node_id(dir.path()).expect("create");
        assert_eq!(load_or_create_node_id(dir.path()).expect("load"), first);
        std::fs::write(dir.path().join(NODE_ID_FILE), "garbage").expect("write");
        assert!(load_or_create_node_id(dir.path()).is_err());
    }

    #[test]
    fn every_start_is_a_new_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(next_generation(dir.path(), 0).expect("first"), 1);
        assert_eq!(next_generation(dir.path(), 0).expect("second"), 2);
        assert_eq!(next_generation(dir.path(), 1_000).expect("clock ahead"), 1_000);
        assert_eq!(next_generation(dir.path(), 10).expect("clock behind"), 1_001);
    }
}
