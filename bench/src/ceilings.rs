//! Physical ceilings, measured on the machine and filesystem the node runs on, so the node's
//! figures can be read against them: durable sequential writes, durable writes in the node's
//! own per-block pattern, loopback TCP, and single-threaded BLAKE3.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One MiB.
pub const MIB: usize = 1 << 20;

/// Bytes per second as MiB/s.
pub fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Writes `mib` MiB to one new file in `dir`, 1 MiB per `write`, then `fdatasync`s once; the
/// time includes the sync. Returns MiB/s. The file is removed afterwards.
pub fn sequential_write(dir: &Path, mib: usize, chunk: &[u8]) -> anyhow::Result<f64> {
    assert_eq!(chunk.len(), MIB, "the chunk must be 1 MiB");
    let path = dir.join("ceiling-sequential.bin");
    let start = Instant::now();
    let mut file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    for _ in 0..mib {
        file.write_all(chunk)?;
    }
    file.sync_data()?;
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(mib_per_sec((mib * MIB) as u64, elapsed))
}

/// Like [`sequential_write`], but with `O_DIRECT`: the bytes go from this process's buffer to
/// the device without the page cache, so the figure is the device's (as far as the virtual disk
/// lets the guest see it), independent of how cheaply the kernel can find page-cache memory.
pub fn sequential_write_direct(dir: &Path, mib: usize, chunk: &[u8]) -> anyhow::Result<f64> {
    use std::os::unix::fs::OpenOptionsExt;
    const ALIGN: usize = 4096;
    assert_eq!(chunk.len(), MIB, "the chunk must be 1 MiB");
    // O_DIRECT needs a buffer aligned to the logical block size: take an aligned window of a
    // slightly larger allocation.
    let mut backing = vec![0u8; MIB + ALIGN];
    let skip = (ALIGN - backing.as_ptr() as usize % ALIGN) % ALIGN;
    let aligned = &mut backing[skip..skip + MIB];
    aligned.copy_from_slice(chunk);
    let path = dir.join("ceiling-direct.bin");
    let start = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(&path)
        .with_context(|| format!("create {} with O_DIRECT", path.display()))?;
    for _ in 0..mib {
        file.write_all(aligned)?;
    }
    file.sync_data()?;
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(mib_per_sec((mib * MIB) as u64, elapsed))
}

/// Writes `files` files of 1 MiB from `threads` threads in the node's block pattern (create a
/// temporary file, write, `fdatasync`, rename into one of 256 shard directories, `fsync` that
/// directory), so each MiB is durable on its own. Returns MiB/s. Everything is removed
/// afterwards.
pub fn per_block_write(dir: &Path, files: usize, threads: usize, chunk: &[u8]) -> anyhow::Result<f64> {
    let root = dir.join(format!("ceiling-per-block-{threads}"));
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    for shard in 0..=255u8 {
        std::fs::create_dir_all(root.join(format!("{shard:02x}")))?;
    }
    let start = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (root, tmp) = (&root, &tmp);
                scope.spawn(move || -> anyhow::Result<()> {
                    for index in (thread..files).step_by(threads) {
                        // Spread over shards the way content hashes do.
                        let shard = root.join(format!("{:02x}", (index.wrapping_mul(167)) % 256));
                        let staged = tmp.join(format!("{index}"));
                        let mut file = File::create(&staged)?;
                        file.write_all(chunk)?;
                        file.sync_data()?;
                        std::fs::rename(&staged, shard.join(format!("{index}")))?;
                        File::open(&shard)?.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    std::fs::remove_dir_all(&root)?;
    Ok(mib_per_sec((files * MIB) as u64, elapsed))
}

/// Pushes `mib` MiB through a loopback TCP connection (1 MiB writes, 1 MiB reads) between two
/// tasks of this process. Returns MiB/s: the transport ceiling under any HTTP transfer here.
pub async fn loopback_tcp(mib: usize) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; MIB];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    });
    let chunk = vec![0x5au8; MIB];
    let start = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    for _ in 0..mib {
        socket.write_all(&chunk).await?;
    }
    socket.shutdown().await?;
    let received = reader.await??;
    let elapsed = start.elapsed();
    anyhow::ensure!(received == (mib * MIB) as u64, "loopback received {received} bytes of {}", mib * MIB);
    Ok(mib_per_sec(received, elapsed))
}

/// Hashes `mib` MiB with BLAKE3 on one thread, 1 MiB per update. Returns MiB/s. The node hashes
/// every uploaded byte twice (the file's hash and the block's name) and every downloaded byte
/// once (verification); the client's verified download hashes it again.
pub fn blake3_one_thread(mib: usize, chunk: &[u8]) -> f64 {
    let start = Instant::now();
    let mut hasher = blake3::Hasher::new();
    for _ in 0..mib {
        hasher.update(chunk);
    }
    std::hint::black_box(hasher.finalize());
    mib_per_sec((mib * MIB) as u64, start.elapsed())
}

/// `threads` threads each append `size`-byte records to a file of their own, `fdatasync`ing
/// after every one, for `duration`. Returns durable appends per second, all threads together:
/// the rate at which this disk makes small writes durable when nothing batches them (what a
/// journal's fsync costs; fjall's group commit can share one fsync among many writes). The
/// files are removed afterwards.
pub fn small_durable_writes(dir: &Path, threads: usize, size: usize, duration: Duration) -> anyhow::Result<f64> {
    let root = dir.join(format!("ceiling-small-{threads}"));
    std::fs::create_dir_all(&root)?;
    let record = vec![0x5au8; size];
    let start = Instant::now();
    let total = std::thread::scope(|scope| -> anyhow::Result<u64> {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let (root, record) = (&root, &record);
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut file = File::create(root.join(format!("{thread}")))?;
                    let mut done = 0u64;
                    while start.elapsed() < duration {
                        file.write_all(record)?;
                        file.sync_data()?;
                        done += 1;
                    }
                    Ok(done)
                })
            })
            .collect();
        let mut total = 0;
        for worker in workers {
            total += worker.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(total)
    })?;
    let elapsed = start.elapsed();
    std::fs::remove_dir_all(&root)?;
    Ok(total as f64 / elapsed.as_secs_f64().max(1e-9))
}
