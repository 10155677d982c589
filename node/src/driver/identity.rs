//! The node's permanent id, made once and kept in the data directory.

use std::path::Path;

use anyhow::Context;
use rand::RngExt;
use shoal_storage::NodeId;

const NODE_ID_FILE: &str = "node_id";

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
            let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_made_once_and_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_node_id(dir.path()).expect("create");
        assert_eq!(load_or_create_node_id(dir.path()).expect("load"), first);
        std::fs::write(dir.path().join(NODE_ID_FILE), "garbage").expect("write");
        assert!(load_or_create_node_id(dir.path()).is_err());
    }
}
