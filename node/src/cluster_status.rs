//! `shoal status` for the whole cluster: every member's own account of durability, asked of
//! each member and added up. Each node counts the partitions whose first live owner it is,
//! so the sum counts each partition once (docs/ARCHITECTURE.md §7).

use std::time::Duration;

use futures_util::future::join_all;

use crate::api::{ClusterDurability, Durability, Status};
use crate::client::Client;

/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks every member `status` lists as alive or suspect (the answering node's own account
/// is already in `status`) and adds the accounts up.
pub async fn gather(status: &Status) -> ClusterDurability {
    let asks = status.members.iter().map(|member| async move {
        if member.node_id == status.node_id {
            return (member.node_id.clone(), status.durability.clone());
        }
        let live = matches!(member.state.as_str(), "alive" | "suspect") && !member.http_addr.is_empty();
        let base = format!("http://{}", member.http_addr);
        let account = match Client::new(&base) {
            Ok(client) if live => match tokio::time::timeout(ASK_TIMEOUT, client.status()).await {
                Ok(Ok(theirs)) => theirs.durability,
                _ => None,
            },
            _ => None,
        };
        (member.node_id.clone(), account)
    });
    let nodes: Vec<(String, Option<Durability>)> = join_all(asks).await;
    let mut total = Durability { eta_secs: Some(0.0), ..Durability::default() };
    for account in nodes.iter().filter_map(|(_, account)| account.as_ref()) {
        total.add(account);
    }
    let unaccounted = (shoal_membership::PARTITIONS as u64).saturating_sub(total.partitions);
    ClusterDurability { total, unaccounted, nodes }
}

/// The durability lines of `shoal status`.
pub fn print(cluster: &ClusterDurability, n: u32, human_bytes: fn(u64) -> String) {
    let total = &cluster.total;
    let accounted = total.partitions;
    println!(
        "durability: {} partitions with {n} confirmed copies, {} with fewer{}",
        total.full,
        total.fewer,
        match cluster.unaccounted {
            0 => String::new(),
            missing => format!(", {missing} unaccounted for (no live owner answered) of {}", accounted + missing),
        }
    );
    if total.refilling > 0 {
        println!("  {} partitions refused to readers by nodes refilling a lost store", total.refilling);
    }
    if total.extra > 0 {
        println!("  {} partition copies held by nodes that no longer own them, to hand over and drop", total.extra);
    }
    let eta = match total.eta_secs {
        Some(_) if total.backlog_entries == 0 && total.fewer == 0 => "nothing to repair".into(),
        Some(secs) => format!("full redundancy in about {secs:.0} s"),
        None => "time to full redundancy unknown (nothing being repaired yet)".into(),
    };
    println!(
        "  repair backlog {} entries (~{}), {:.1} entries/s, {}/s; {eta}",
        total.backlog_entries,
        human_bytes(total.backlog_bytes),
        total.rate_entries_per_sec,
        human_bytes(total.rate_bytes_per_sec as u64),
    );
}
