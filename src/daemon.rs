//! The mount lifecycle: sanity checks, hardening, the FUSE session, signal
//! handling, change polling and a clean unmount.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::error::{Error, ErrorKind, Result, err};
use crate::fusefs::{CircleFs, poll_changes};
use crate::vault::workspace::Workspace;
use crate::vault::{Session, Vault};

/// How long a group-commit batch gathers operations before it is
/// committed: 5 ms while another mount is present (its writers wait for
/// the batch), 25 ms while the mount is alone. Alternating runs, 5 → 25 ms
/// alone: 10,000 small files created in 1.42-1.64 → 1.30-1.39 s, removed
/// in 0.96-1.04 → 0.80-0.85 s, the source tree removed in 1.01-1.15 →
/// 0.93-0.99 s, git add 3.43-3.74 → 3.30-3.46 s; tar unchanged.
const BATCH_WINDOW: crate::store::BatchWindow = crate::store::BatchWindow {
    shared: Duration::from_millis(5),
    alone: Duration::from_millis(25),
};

/// Mount options (`-o`).
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Read-only mount.
    pub read_only: bool,
    /// Let other local users in (kernel permission checks apply).
    pub allow_other: bool,
    /// FUSE worker threads reading the FUSE device (without io_uring).
    pub threads: usize,
    /// Commit every operation on its own (no group commit).
    pub no_batch: bool,
    /// Store every write at once (no write-behind).
    pub no_write_behind: bool,
    /// Time every FUSE request; write the table here at unmount.
    pub opstats: Option<PathBuf>,
    /// The mount's readahead in KiB (0: the kernel's own, 128 KiB).
    pub readahead_kb: u32,
    /// Threads per CPU serving FUSE over io_uring when the kernel offers
    /// it (0: the FUSE device only).
    pub uring_threads: usize,
    /// Ring threads wait at `SCHED_IDLE` while nothing competes for their
    /// CPU (vendor/fuser/src/handoff.rs); off with `-o nohandoff`.
    pub idle_handoff: bool,
}

/// Threads per CPU serving FUSE over io_uring by default (and with
/// `-o uring`): a second one takes a request of that CPU while the first
/// waits (for the store's write lock, say).
pub const URING_THREADS: usize = 2;

/// FUSE worker threads per CPU by default (see [`default_threads`]).
const THREADS_PER_CPU: usize = 2;
/// Bounds of the default number of FUSE worker threads.
const DEFAULT_THREADS: std::ops::RangeInclusive<usize> = 4..=16;

/// The default number of FUSE worker threads reading the FUSE device
/// when FUSE over io_uring is not in use (with it, one thread reads the
/// device and [`URING_THREADS`] per CPU serve the rings): two per CPU, 4
/// to 16.
/// Each request wakes one of the threads waiting on the FUSE device; on
/// the 2-CPU machine of docs/performance.md four threads answered random
/// 4 KiB I/O 14-31 % faster than two (why more idle threads help is not
/// established: docs/performance.md). Each thread costs about 3 MiB of
/// resident memory once 1 MiB requests have passed through it (its
/// request buffer and allocator arena), so six, though a little faster
/// again at small-file creation, took the benchmark's peak RSS past
/// 100 MiB.
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.saturating_mul(THREADS_PER_CPU)
        .clamp(*DEFAULT_THREADS.start(), *DEFAULT_THREADS.end())
}

/// Default readahead of a mount: 1 MiB, so a sequential read reaches the
/// daemon in 1 MiB requests, each one `O_DIRECT` read of its slots.
pub const READAHEAD_KB: u32 = 1024;

/// The number after `=` in a mount option `name=N`, within `range`.
fn number<T: std::str::FromStr + PartialOrd>(
    item: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T> {
    item.split_once('=')
        .and_then(|(_, v)| v.parse::<T>().ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| Error::new(ErrorKind::BadRequest, format!("bad mount option {item}")))
}

impl MountOptions {
    /// Parse `-o a,b,c`.
    pub fn parse(list: &[String]) -> Result<MountOptions> {
        let mut o = MountOptions {
            threads: default_threads(),
            readahead_kb: READAHEAD_KB,
            uring_threads: URING_THREADS,
            idle_handoff: true,
            ..Default::default()
        };
        for item in list.iter().flat_map(|s| s.split(',')) {
            match item.trim() {
                "" => {}
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "nobatch" => o.no_batch = true,
                "nowritebehind" => o.no_write_behind = true,
                "nouring" => o.uring_threads = 0,
                "handoff" => o.idle_handoff = true,
                "nohandoff" => o.idle_handoff = false,
                "uring" => o.uring_threads = URING_THREADS,
                x if x.starts_with("uring=") => o.uring_threads = number(x, 0..=16)?,
                x if x.starts_with("opstats=") && x.len() > 8 => {
                    // Absolute: the daemon leaves the caller's directory.
                    o.opstats = Some(std::path::absolute(&x[8..]).map_err(|e| {
                        Error::new(ErrorKind::BadRequest, format!("bad mount option {x}: {e}"))
                    })?);
                }
                x if x.starts_with("readahead=") => o.readahead_kb = number(x, 0..=65536)?,
                x if x.starts_with("threads=") => o.threads = number(x, 1..=64)?,
                x => {
                    return err(
                        ErrorKind::BadRequest,
                        format!(
                            "unknown mount option {x} (ro, rw, allow_other, threads=N, uring, uring=N, nouring, handoff, nohandoff, readahead=KIB, nobatch, nowritebehind, opstats=FILE)"
                        ),
                    );
                }
            }
        }
        Ok(o)
    }
}

/// Refuse a store that is group/world accessible or reachable through the mount.
pub fn sanity_checks(store: &Path, mountpoint: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(store).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("store {}: {e}", store.display()),
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return err(
            ErrorKind::Forbidden,
            format!(
                "store {} is accessible to other users (mode {:o}); chmod 700 it",
                store.display(),
                meta.permissions().mode() & 0o777
            ),
        );
    }
    let mp = std::fs::canonicalize(mountpoint).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("mount point {}: {e}", mountpoint.display()),
        )
    })?;
    if !mp.is_dir() {
        return err(
            ErrorKind::BadRequest,
            format!("mount point {} is not a directory", mp.display()),
        );
    }
    let st = std::fs::canonicalize(store)?;
    if st.starts_with(&mp) || mp.starts_with(&st) {
        return err(
            ErrorKind::Forbidden,
            "the store lies inside the mount point (or the reverse): its ciphertext would be reachable through the mount",
        );
    }
    Ok(())
}

/// Best-effort hardening: no core dumps, not ptrace-attachable by the same uid.
pub fn harden() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::warn!("PR_SET_DUMPABLE failed: {e}");
    }
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        log::warn!("RLIMIT_CORE failed: {e}");
    }
}

/// Mount and serve until unmounted or signalled. `ready` is called once the
/// kernel mount exists.
pub fn serve(
    vault: Arc<Vault>,
    session: Session,
    store: PathBuf,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(),
) -> Result<()> {
    harden();
    let session = Arc::new(session);
    let ws = Arc::new(Workspace::new(vault, session, opts.read_only)?);
    // The change poll below settles pending writes every 250 ms.
    ws.set_write_behind(!opts.no_write_behind);
    let mut fs = CircleFs::new(ws.clone()).with_uring(opts.uring_threads > 0);
    if let Some(p) = &opts.opstats {
        fs = fs.with_opstats(p.clone());
    }
    let notifier = fs.notifier_slot();
    let mut mount_options = vec![
        MountOption::FSName(format!("circlefs:{}", store.display())),
        MountOption::Subtype("circlefs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if opts.read_only {
        mount_options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.uring_threads_per_queue = opts.uring_threads;
    config.uring_idle_handoff = opts.idle_handoff;
    let mut fsession = fuser::Session::new(fs, mountpoint, &config)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("mount failed: {e}")))?;
    let _ = notifier.set(fsession.notifier());
    let mut unmounter = fsession.unmount_callable();
    let stop = Arc::new(AtomicBool::new(false));

    // Signals: unmount cleanly.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| Error::new(ErrorKind::Internal, format!("signals: {e}")))?;
    let sig_handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                log::error!("unmount failed: {e}");
            }
        }
    });

    // Group commit: operations share a transaction, committed by this
    // flusher within BATCH_WINDOW (or earlier by a close, fsync, block
    // removal or truncation).
    if !opts.no_batch {
        ws.vault().store().set_group_commit(true)?;
        let ws = ws.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = ws
                    .vault()
                    .store()
                    .flush_batch(Duration::from_millis(250), BATCH_WINDOW)
                {
                    log::error!("group commit failed: {e}");
                }
            }
        });
    }

    // WAL checkpoints on their own thread (store::checkpointer): the
    // flusher's commits then never copy the log while requests wait.
    let checkpoints = if opts.no_batch {
        None
    } else {
        start_checkpoints(&ws)
            .map_err(|e| log::warn!("no checkpoint thread ({e}): commits checkpoint the WAL"))
            .ok()
    };

    // Membership changes made by other processes.
    {
        let ws = ws.clone();
        let stop = stop.clone();
        let notifier = notifier.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                poll_changes(&ws, &notifier);
            }
        });
    }

    ready();
    if opts.readahead_kb > 0 {
        let mp = mountpoint.to_path_buf();
        let kb = opts.readahead_kb;
        std::thread::spawn(move || set_readahead(&mp, kb));
    }
    let r = fsession.run();
    stop.store(true, Ordering::Relaxed);
    if let Some((stopper, t)) = checkpoints {
        stopper.stop();
        if t.join().is_err() {
            log::error!("the checkpoint thread panicked");
        }
    }
    sig_handle.close();
    if let Err(e) = ws.shutdown() {
        log::error!("final flush failed: {e}");
    }
    if let Err(e) = ws.vault().store().set_group_commit(false) {
        log::error!("final commit failed: {e}");
    }
    r.map_err(|e| Error::new(ErrorKind::Internal, format!("FUSE session: {e}")))
}

/// Hand the store's WAL checkpoints to a thread of their own; what stops
/// it, and the thread.
fn start_checkpoints(
    ws: &Arc<Workspace>,
) -> std::result::Result<(crate::store::CheckpointStopper, std::thread::JoinHandle<()>), String> {
    let ckpt = ws
        .vault()
        .store()
        .hand_off_checkpoints()
        .map_err(|e| e.to_string())?;
    let stopper = ckpt.stopper();
    let ws = ws.clone();
    let t = std::thread::Builder::new()
        .name("checkpoint".into())
        .spawn(move || ws.vault().store().run_checkpoints(&ckpt))
        .map_err(|e| e.to_string())?;
    Ok((stopper, t))
}

/// Set the readahead of the mount at `mp` (its FUSE connection's own
/// backing device info, `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`).
///
/// The kernel starts a FUSE mount at 128 KiB and lowers it to what the
/// daemon's INIT reply allows, so it is raised after INIT: the `stat` of
/// the mount point waits for that reply. Writing the file takes root; a
/// mount that may not keeps the kernel's 128 KiB (logged).
fn set_readahead(mp: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let r = std::fs::metadata(mp).and_then(|m| {
        let dev = m.dev();
        let path = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev)
        );
        std::fs::write(&path, format!("{kb}\n")).map(|()| path)
    });
    match r {
        Ok(path) => log::debug!("readahead {kb} KiB ({path})"),
        Err(e) => log::info!("readahead left at the kernel's: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harden_makes_the_process_undumpable() {
        harden();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
    }

    #[test]
    fn mount_options_parse() {
        let o = MountOptions::parse(&["ro,allow_other".into(), "threads=4".into()]).unwrap();
        assert!(o.read_only && o.allow_other && o.threads == 4);
        assert!(!o.no_write_behind);
        assert!(
            MountOptions::parse(&["nowritebehind".into()])
                .unwrap()
                .no_write_behind
        );
        assert!(MountOptions::parse(&["bogus".into()]).is_err());
        assert!(MountOptions::parse(&["threads=0".into()]).is_err());
        assert!(MountOptions::parse(&["threads=65".into()]).is_err());
        let t = MountOptions::parse(&[]).unwrap().threads;
        assert_eq!(t, default_threads());
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(t, (2 * cpus).clamp(4, 16), "two per CPU, 4 to 16");
        let o = MountOptions::parse(&["opstats=ops.md".into()]).unwrap();
        assert!(
            o.opstats
                .as_ref()
                .is_some_and(|p| p.is_absolute() && p.ends_with("ops.md"))
        );
        assert!(MountOptions::parse(&["opstats=".into()]).is_err());
        assert_eq!(o.readahead_kb, READAHEAD_KB, "1 MiB unless told");
        let ra = |x: &str| MountOptions::parse(&[x.into()]).map(|o| o.readahead_kb);
        assert_eq!(ra("readahead=0").unwrap(), 0);
        assert_eq!(ra("readahead=4096").unwrap(), 4096);
        assert!(ra("readahead=").is_err());
        assert!(ra("readahead=-1").is_err());
        assert!(ra("readahead=65537").is_err());
        let ur = |x: &str| MountOptions::parse(&[x.into()]).map(|o| o.uring_threads);
        assert_eq!(ur("rw").unwrap(), URING_THREADS, "two per CPU unless told");
        assert_eq!(ur("uring").unwrap(), URING_THREADS);
        assert_eq!(ur("uring=1").unwrap(), 1);
        assert_eq!(ur("nouring").unwrap(), 0);
        assert_eq!(ur("uring=0").unwrap(), 0);
        assert!(ur("uring=17").is_err());
        assert!(ur("uring=").is_err());
        let ho = |x: &str| MountOptions::parse(&[x.into()]).map(|o| o.idle_handoff);
        assert!(ho("rw").unwrap(), "the idle hand-off is on unless told");
        assert!(!ho("nohandoff").unwrap());
        assert!(ho("nohandoff,handoff").unwrap());
        assert!(ho("handoff=1").is_err());
    }
}
