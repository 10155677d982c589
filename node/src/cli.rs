//! The `shoal` command line: `serve` runs a node; the other commands talk to one over HTTP.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::api::{DirListing, FileInfo, Status};
use crate::client::{Client, ClientError, remote_path};
use crate::config::Config;
use crate::driver::Node;

/// Shoal: a masterless distributed file store.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// The node to talk to (client commands).
    #[arg(long, global = true, env = "SHOAL_NODE", default_value = "http://127.0.0.1:7700")]
    pub node: String,
    /// Print JSON instead of a table (stat, ls, status).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Run a local cluster of several nodes in this one process (Ctrl-C stops it).
    Dev(DevArgs),
    /// Upload a local file (or `-` for standard input) to REMOTE.
    Put {
        /// Local file, or `-` to read standard input.
        local: PathBuf,
        /// Path in Shoal, such as /photos/beach.jpg.
        remote: String,
    },
    /// Download REMOTE to LOCAL (default: its file name; `-` for standard output).
    Get {
        /// Path in Shoal.
        remote: String,
        /// Local file, or `-` for standard output.
        local: Option<PathBuf>,
    },
    /// Show a file's size, hash, version and modification time.
    Stat {
        /// Path in Shoal.
        remote: String,
    },
    /// List a directory (default: the root).
    Ls {
        /// Directory in Shoal.
        #[arg(default_value = "/")]
        remote: String,
    },
    /// Make a directory and any missing parents.
    Mkdir {
        /// Directory in Shoal.
        remote: String,
    },
    /// Delete a file, or a directory with -r.
    Rm {
        /// Remove a directory and everything below it.
        #[arg(short, long)]
        recursive: bool,
        /// Path in Shoal.
        remote: String,
    },
    /// Show the cluster as the node sees it.
    Status,
}

/// `shoal serve`: every config key as a flag; a flag wins over the file, the file over the
/// default.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (see README for every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for this node's data [default: ./shoal-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP API address [default: 127.0.0.1:7700].
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Cluster address (gossip and RPC) [default: 127.0.0.1:7701].
    #[arg(long)]
    pub cluster_addr: Option<SocketAddr>,
    /// Block size in bytes [default: 1048576].
    #[arg(long)]
    pub block_size_bytes: Option<u32>,
    /// Free disk space kept in reserve, in bytes [default: 268435456].
    #[arg(long)]
    pub disk_reserve_bytes: Option<u64>,
    /// Most bytes this node may store [default: the whole disk].
    #[arg(long)]
    pub capacity_bytes: Option<u64>,
    /// fjall block cache in bytes [default: 67108864].
    #[arg(long)]
    pub cache_bytes: Option<u64>,
    /// Blocks of one upload written at once [default: 4].
    #[arg(long)]
    pub upload_blocks_in_flight_max: Option<usize>,
    /// Uploads served at once; more get 503 [default: 64].
    #[arg(long)]
    pub uploads_in_flight_max: Option<usize>,
    /// Blocks of one download read ahead [default: 2].
    #[arg(long)]
    pub download_blocks_ahead_max: Option<usize>,
    /// Seconds in-flight requests get after SIGTERM [default: 30].
    #[arg(long)]
    pub shutdown_grace_secs: Option<u64>,
    /// Cluster address (host:port) of a member to join through; repeat for several. Adds to
    /// the config file's `seeds`.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub seeds: Vec<String>,
    /// Cluster name; gossip from other clusters is dropped [default: shoal].
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Gossip timing preset: lan, wan or local [default: lan].
    #[arg(long, value_parser = parse_preset)]
    pub gossip_preset: Option<shoal_membership::Preset>,
    /// Failure domain of this node [default: default].
    #[arg(long)]
    pub zone: Option<String>,
    /// Expected cluster size [default: 16].
    #[arg(long)]
    pub expected_members: Option<u32>,
    /// Copies of every block and record, N [default: 3].
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Owners that must make a write durable before it is acknowledged, W [default: 2].
    #[arg(long)]
    pub write_quorum: Option<usize>,
    /// Owners a read consults, R [default: 2].
    #[arg(long)]
    pub read_quorum: Option<usize>,
    /// Seconds a down member keeps its ring ranges [default: 600].
    #[arg(long)]
    pub evict_after_secs: Option<u64>,
    /// Milliseconds a replica has to answer [default: 5000].
    #[arg(long)]
    pub rpc_timeout_ms: Option<u64>,
    /// Requests in flight to one peer at most [default: 64].
    #[arg(long)]
    pub rpc_in_flight_per_peer_max: Option<usize>,
    /// Bytes per second repair may copy [default: 134217728].
    #[arg(long)]
    pub repair_bytes_per_sec: Option<u64>,
    /// Block copies one repair exchange keeps in flight [default: 4].
    #[arg(long)]
    pub repair_transfers_max: Option<usize>,
}

/// `shoal dev`: node i serves HTTP on 127.0.0.1:(BASE + 2i) and cluster traffic on the next
/// port; nodes 1.. join through node 0; gossip preset local; N, W and R as in `shoal serve`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Nodes to run, 1 to 16.
    #[arg(
        long,
        default_value_t = 3,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::dev::NODES_MAX as u64)
    )]
    pub nodes: usize,
    /// First port: node i uses BASE + 2i (HTTP) and BASE + 2i + 1 (cluster).
    #[arg(long, value_name = "BASE", default_value_t = 7700)]
    pub port_base: u16,
    /// Keep the data in DIR/node-<i> [default: a temporary directory, removed on exit].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Block size in bytes [default: 1048576].
    #[arg(long)]
    pub block_size_bytes: Option<u32>,
}

fn parse_preset(value: &str) -> Result<shoal_membership::Preset, String> {
    match value {
        "lan" => Ok(shoal_membership::Preset::Lan),
        "wan" => Ok(shoal_membership::Preset::Wan),
        "local" => Ok(shoal_membership::Preset::Local),
        other => Err(format!("{other:?} is not a preset (lan, wan, local)")),
    }
}

impl ServeArgs {
    /// The default config, overridden by the file, overridden by the flags; validated.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! override_with {
            ($($field:ident),*) => { $(if let Some(value) = self.$field.clone() { config.$field = value; })* };
        }
        override_with!(
            data_dir,
            http_addr,
            cluster_addr,
            block_size_bytes,
            disk_reserve_bytes,
            cache_bytes,
            upload_blocks_in_flight_max,
            uploads_in_flight_max,
            download_blocks_ahead_max,
            shutdown_grace_secs,
            cluster_name,
            gossip_preset,
            zone,
            expected_members,
            replicas,
            write_quorum,
            read_quorum,
            evict_after_secs,
            rpc_timeout_ms,
            rpc_in_flight_per_peer_max,
            repair_bytes_per_sec,
            repair_transfers_max
        );
        config.seeds.extend(self.seeds.iter().cloned());
        if let Some(capacity) = self.capacity_bytes {
            config.capacity_bytes = Some(capacity);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || Client::new(&cli.node).with_context(|| format!("bad node URL {}", cli.node));
    match &cli.command {
        Command::Serve(args) => Node::start(args.config()?).await?.run_until_signal().await,
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Put { local, remote } => put(&client()?, local, remote, cli.json).await,
        Command::Get { remote, local } => get(&client()?, remote, local.as_deref()).await,
        Command::Stat { remote } => {
            let info = client()?.stat(remote).await.map_err(|err| explain(err, &cli.node))?;
            print_info(&info, cli.json)
        }
        Command::Ls { remote } => {
            let listing = client()?.list(remote).await.map_err(|err| explain(err, &cli.node))?;
            print_listing(&listing, cli.json)
        }
        Command::Mkdir { remote } => {
            let made = client()?.mkdir(remote).await.map_err(|err| explain(err, &cli.node))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            }
            Ok(())
        }
        Command::Rm { recursive, remote } => rm(&client()?, remote, *recursive, cli.json).await,
        Command::Status => {
            let mut status = client()?.status().await.map_err(|err| explain(err, &cli.node))?;
            status.cluster_durability = Some(crate::cluster_status::gather(&status).await);
            print_status(&status, cli.json)
        }
    }
}

/// Adds the node's address to transport errors, which otherwise do not say where they went.
fn explain(err: ClientError, node: &str) -> anyhow::Error {
    match err {
        ClientError::Transport(_) => {
            anyhow::anyhow!("cannot reach the node at {node} ({err}); is `shoal serve` running?")
        }
        other => other.into(),
    }
}

fn progress_bar(label: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_string());
    Some(bar)
}

async fn put(client: &Client, local: &Path, remote: &str, json: bool) -> anyhow::Result<()> {
    let info = if local == Path::new("-") {
        // Standard input cannot be hashed ahead of sending; the node's hash is reported.
        let stdin = tokio_util::io::ReaderStream::new(tokio::io::stdin());
        client.put_stream(remote, stdin, None, None).await
    } else {
        let bar = progress_bar(&format!("put {}", local.display()));
        let result = client.put_file(local, remote, bar.clone()).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        result
    }
    .map_err(|err| explain(err, client.base()))
    .with_context(|| format!("put {} -> {remote}", local.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{}  {} bytes  blake3 {}", info.path, info.size, info.blake3);
    }
    Ok(())
}

async fn get(client: &Client, remote: &str, local: Option<&Path>) -> anyhow::Result<()> {
    let remote = remote_path(remote);
    let local = match local {
        Some(local) => local.to_path_buf(),
        None => match remote.rsplit('/').next() {
            Some(name) if !name.is_empty() => PathBuf::from(name),
            _ => bail!("{remote} has no file name; give a local path"),
        },
    };
    if local == Path::new("-") {
        let mut stdout = tokio::io::stdout();
        client.get_to(&remote, &mut stdout, None).await.map_err(|err| explain(err, client.base()))?;
        return Ok(());
    }
    // Download beside the target and rename at the end: a failed transfer leaves no partial
    // file under the real name.
    let partial = local.with_file_name(format!(
        ".{}.shoal-partial",
        local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let result = async {
        let mut file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
        let bar = progress_bar(&format!("get {remote}"));
        let info = client.get_to(&remote, &mut file, bar.as_ref()).await.map_err(|err| explain(err, client.base()));
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let info = info?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, &local).await?;
        anyhow::Ok(info)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result.with_context(|| format!("get {remote} -> {}", local.display()))?;
    Ok(())
}

async fn rm(client: &Client, remote: &str, recursive: bool, json: bool) -> anyhow::Result<()> {
    let remote = remote_path(remote);
    let result = match client.delete_file(&remote).await {
        Ok(deleted) => deleted,
        Err(err) if err.status() == Some(404) => {
            // Not a file: maybe a directory.
            match client.list(&remote).await {
                Ok(_) if recursive => client.remove_dir(&remote, true).await.map_err(|e| explain(e, client.base()))?,
                Ok(_) => bail!("{remote} is a directory; use `shoal rm -r` to remove it and everything below it"),
                Err(_) => return Err(explain(err, client.base())),
            }
        }
        Err(err) => return Err(explain(err, client.base())),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

fn print_info(info: &FileInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
    } else {
        println!("path:     {}", info.path);
        println!("size:     {} bytes", info.size);
        println!("blake3:   {}", info.blake3);
        println!("version:  {}", info.version);
        println!("modified: {}", format_time(info.modified_ms));
    }
    Ok(())
}

fn print_listing(listing: &DirListing, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(listing)?);
        return Ok(());
    }
    for entry in &listing.entries {
        let name = if entry.kind == "dir" { format!("{}/", entry.name) } else { entry.name.clone() };
        println!("{:<4} {:>14}  {}  {}", entry.kind, entry.size, format_time(entry.modified_ms), name);
    }
    Ok(())
}

fn print_status(status: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let r = status.replication;
    let me = status.node_id.get(..8).unwrap_or(&status.node_id);
    println!("cluster as seen by {me} (shoal {}), N={} W={} R={}", status.shoal_version, r.n, r.w, r.r);
    match &status.not_coordinating {
        Some(why) => println!("not coordinating requests: {why}"),
        None => println!("coordinating requests"),
    }
    if status.settling_partitions > 0 {
        println!(
            "{} partitions settling: their new owners are not yet confirmed to hold what the previous ones did",
            status.settling_partitions
        );
    }
    let accounts = status.cluster_durability.as_ref();
    if let Some(cluster) = accounts {
        crate::cluster_status::print(cluster, r.n, human_bytes);
    }
    let account_of = |node_id: &str| {
        let nodes = accounts.map(|cluster| cluster.nodes.as_slice()).unwrap_or_default();
        match nodes.iter().find(|(id, _)| id == node_id).and_then(|(_, account)| account.as_ref()) {
            Some(account) => (format!("{}/{}", account.full, account.partitions), account.backlog_entries.to_string()),
            None => ("-".into(), "-".into()),
        }
    };
    let header =
        ["NODE", "ADDRESS", "HTTP", "ZONE", "STATE", "RING", "GEN", "CAPACITY", "USED", "SINCE", "FULL", "BACKLOG"];
    let rows: Vec<[String; 12]> = status
        .members
        .iter()
        .map(|m| {
            let (full, backlog) = account_of(&m.node_id);
            [
                m.node_id.get(..8).unwrap_or(&m.node_id).to_string(),
                m.cluster_addr.clone(),
                m.http_addr.clone(),
                m.zone.clone(),
                m.state.clone(),
                format!("{:.1}%", m.ring_share_percent),
                m.generation.to_string(),
                human_bytes(m.capacity_bytes),
                human_bytes(m.disk_used_bytes),
                human_duration(m.state_age_ms),
                full,
                backlog,
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|row| row[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{}h", secs / 86400, secs / 3600 % 24),
    }
}

/// UTC time as `YYYY-MM-DD HH:MM:SS`, without a date crate.
fn format_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_print_for_people() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_duration(3_725_000), "1h2m");
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("shoal.toml");
        std::fs::write(&file, "http_addr = \"127.0.0.1:9000\"\ncluster_addr = \"127.0.0.1:9001\"\n").expect("write");
        let cli = Cli::parse_from([
            "shoal",
            "serve",
            "--config",
            file.to_str().expect("utf-8"),
            "--http-addr",
            "127.0.0.1:9100",
        ]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let config = args.config().expect("valid");
        assert_eq!(config.http_addr, "127.0.0.1:9100".parse().expect("addr"));
        assert_eq!(config.cluster_addr, "127.0.0.1:9001".parse().expect("addr"));
    }

    #[test]
    fn an_invalid_flag_value_is_a_clear_error() {
        let cli = Cli::parse_from(["shoal", "serve", "--block-size-bytes", "10"]);
        let Command::Serve(args) = cli.command else { panic!("serve") };
        let err = args.config().expect_err("too small").to_string();
        assert!(err.contains("block_size_bytes"), "{err}");
    }
}
