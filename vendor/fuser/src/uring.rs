//! FUSE over io_uring (Linux 6.14+; a circlefs patch to fuser 0.18): one
//! request queue per CPU, served by threads pinned to that CPU, so that a
//! request is answered on the CPU of the process that made it.
//!
//! The kernel (`fs/fuse/dev_uring.c`) hands each request to a registered
//! ring entry: the `fuse_in_header` in the entry's header buffer
//! (`in_out`), the opcode's argument struct in `op_in` and the rest (names,
//! write data) in the entry's payload buffer. The reply goes back the same
//! way: `fuse_out_header` in `in_out`, the body in the payload buffer, its
//! length in `ring_ent_in_out.payload_sz`, committed with
//! `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which also waits for the next
//! request. Forgets and interrupts still come through the FUSE device.
//!
//! Each thread owns one entry (one request at a time), so a request is
//! never queued behind a busy thread of its own CPU while another of that
//! CPU's threads is idle. Requests are re-laid out as the device would
//! deliver them (header, argument struct, payload, contiguous) and
//! dispatched exactly as the device's are.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::mpsc;
use std::thread;
use std::thread::JoinHandle;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::warn;

use crate::Filesystem;
use crate::channel::ChannelSender;
use crate::handoff::Handoff;
use crate::ll::Operation;
use crate::reply::ReplyEmpty;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// Offsets in `struct fuse_uring_req_header`.
const OP_IN: usize = 128;
const OP_IN_SZ: usize = 128;
const ENT_IN_OUT: usize = 256;
const HEADER_SZ: usize = 288;
const IN_HEADER_SZ: usize = 40;
const OUT_HEADER_SZ: usize = 16;
const PAGE: usize = 4096;
/// `enum fuse_uring_cmd`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Requests that get no reply.
const FUSE_FORGET: u32 = 2;
const FUSE_BATCH_FORGET: u32 = 42;

/// One entry's memory: a header page, a scratch page and the payload
/// buffer, contiguous, so a request's header and argument struct can be
/// copied into the scratch page's end and read with the payload as one
/// slice.
struct Buffers {
    base: *mut u8,
    len: usize,
    payload_cap: usize,
}

// SAFETY: the mapping is plain memory owned by this value; who touches
// which part when is serialised by `Slot::state` (see `Slot`).
unsafe impl Send for Buffers {}
unsafe impl Sync for Buffers {}

impl Buffers {
    fn new(payload_cap: usize) -> io::Result<Buffers> {
        let payload_cap = payload_cap.div_ceil(PAGE) * PAGE;
        let len = 2 * PAGE + payload_cap;
        // SAFETY: an anonymous private mapping, checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Buffers {
            base: base.cast(),
            len,
            payload_cap,
        })
    }

    fn header(&self) -> *mut u8 {
        self.base
    }

    fn payload(&self) -> *mut u8 {
        // SAFETY: within the mapping (2 pages + payload_cap).
        unsafe { self.base.add(2 * PAGE) }
    }

    fn read_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: off + 8 <= HEADER_SZ < PAGE.
        unsafe { std::ptr::copy_nonoverlapping(self.header().add(off), b.as_mut_ptr(), 8) };
        u64::from_ne_bytes(b)
    }

    fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        // SAFETY: off + 4 <= HEADER_SZ < PAGE.
        unsafe { std::ptr::copy_nonoverlapping(self.header().add(off), b.as_mut_ptr(), 4) };
        u32::from_ne_bytes(b)
    }

    fn write_header(&self, off: usize, bytes: &[u8]) {
        debug_assert!(off + bytes.len() <= HEADER_SZ);
        // SAFETY: within the header page.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.header().add(off), bytes.len())
        };
    }

    fn write_payload(&self, off: usize, bytes: &[u8]) {
        debug_assert!(off + bytes.len() <= self.payload_cap);
        // SAFETY: within the payload buffer (checked by the callers).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.payload().add(off), bytes.len())
        };
    }

    fn set_payload_sz(&self, n: u32) {
        self.write_header(ENT_IN_OUT + 16, &n.to_ne_bytes());
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Reply state of the request an entry holds.
#[derive(Default)]
struct State {
    /// A reply was written.
    replied: bool,
    /// The request's payload is borrowed while it is dispatched: a body
    /// written then is staged here and copied in after dispatch.
    stage: bool,
    staged: Vec<u8>,
}

/// An entry: its buffers and the reply state of its request.
struct Slot {
    bufs: Buffers,
    ch: ChannelSender,
    state: Mutex<State>,
    cv: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write an error reply (no body).
    fn reply_error(&self, unique: u64, errno: i32) {
        let mut st = self.lock();
        self.finish_empty(&mut st, unique, -errno);
    }

    /// Complete the entry's reply with a header alone (`error`: 0 or a
    /// negated errno) and wake whoever waits for it.
    fn finish_empty(&self, st: &mut State, unique: u64, error: i32) {
        self.write_out_header(unique, error);
        self.bufs.set_payload_sz(0);
        st.staged.clear();
        st.replied = true;
        self.cv.notify_all();
    }

    fn write_out_header(&self, unique: u64, error: i32) {
        let mut h = [0u8; OUT_HEADER_SZ];
        h[0..4].copy_from_slice(&(OUT_HEADER_SZ as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&error.to_ne_bytes());
        h[8..16].copy_from_slice(&unique.to_ne_bytes());
        self.bufs.write_header(0, &h);
    }
}

/// The reply sender of a request that came through a ring entry.
#[derive(Clone)]
pub(crate) struct RingReply(Arc<Slot>);

impl std::fmt::Debug for RingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingReply")
    }
}

impl RingReply {
    /// Write a reply (a `fuse_out_header` then the body, as it would be
    /// written to the device) into the entry.
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let slot = &self.0;
        let mut st = slot.lock();
        if st.replied {
            return Err(io::Error::other("second reply to one request"));
        }
        let total: usize = data.iter().map(|s| s.len()).sum();
        if total < OUT_HEADER_SZ {
            return Err(io::Error::other("reply shorter than its header"));
        }
        let body = total - OUT_HEADER_SZ;
        let mut header = [0u8; OUT_HEADER_SZ];
        let mut at = 0usize;
        st.staged.clear();
        let oversized = body > slot.bufs.payload_cap;
        for s in data {
            let mut s: &[u8] = s;
            if at < OUT_HEADER_SZ {
                let n = (OUT_HEADER_SZ - at).min(s.len());
                header[at..at + n].copy_from_slice(&s[..n]);
                at += n;
                s = &s[n..];
            }
            if s.is_empty() || oversized {
                at += s.len();
                continue;
            }
            if st.stage {
                st.staged.extend_from_slice(s);
            } else {
                slot.bufs.write_payload(at - OUT_HEADER_SZ, s);
            }
            at += s.len();
        }
        if oversized {
            let unique = u64::from_ne_bytes(header[8..16].try_into().unwrap_or([0; 8]));
            error!(
                "reply of {body} bytes exceeds the ring entry's {}",
                slot.bufs.payload_cap
            );
            slot.finish_empty(&mut st, unique, -libc::EIO);
            return Ok(());
        }
        slot.bufs.write_header(0, &header);
        slot.bufs.set_payload_sz(body as u32);
        st.replied = true;
        slot.cv.notify_all();
        Ok(())
    }

    pub(crate) fn channel(&self) -> &ChannelSender {
        &self.0.ch
    }
}

/// Parse a kernel CPU list ("0-3,8,10-11") into the CPUs it names.
fn cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let a: usize = part.trim().parse().ok()?;
                (a, a)
            }
        };
        if b < a || b > 1 << 16 {
            return None;
        }
        cpus.extend(a..=b);
    }
    Some(cpus)
}

fn sys_cpus(which: &str) -> Option<Vec<usize>> {
    let s = std::fs::read_to_string(format!("/sys/devices/system/cpu/{which}")).ok()?;
    cpu_list(&s).filter(|c| !c.is_empty())
}

/// Queues the kernel makes (one per possible CPU, `num_possible_cpus()`;
/// a queue's id is the CPU number) and which of those CPUs are online.
fn queues() -> (usize, Vec<usize>) {
    let possible = sys_cpus("possible")
        .and_then(|c| c.iter().max().map(|m| m + 1))
        .unwrap_or_else(|| {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
            usize::try_from(n).unwrap_or(1).max(1)
        });
    let online = sys_cpus("online").unwrap_or_else(|| (0..possible).collect());
    (possible, online)
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET bounds-checks.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            debug!(
                "io_uring queue {cpu}: not pinned: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn uring_cmd(fd: RawFd, op: u32, qid: u16, commit_id: u64, iov: Option<u64>) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 pad[6] }
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut b = opcode::UringCmd80::new(types::Fd(fd), op).cmd(cmd);
    if let Some(addr) = iov {
        b = b.addr(Some(addr));
    }
    let e = b.build();
    match iov {
        // sqe->len = 2 (header and payload iovecs): io-uring's builder
        // has no setter for a URING_CMD, so the field is set in place.
        Some(_) => set_sqe_len(e, 2),
        None => e,
    }
}

fn set_sqe_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is #[repr(C)] (an io_uring_sqe then 64 bytes);
    // `len` is the u32 at offset 24 of io_uring_sqe.
    unsafe {
        let mut raw: [u8; 128] = std::mem::transmute(e);
        raw[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(raw)
    }
}

/// What `start` made: the threads (to join) and whether every queue
/// registered.
pub(crate) struct Started {
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) ok: bool,
}

/// Start `per_queue` threads for each CPU's queue on the FUSE device `fd`.
pub(crate) fn start<FS: Filesystem + Send + Sync + 'static>(
    fd: RawFd,
    payload_cap: usize,
    per_queue: usize,
    idle_handoff: bool,
    mut make_loop: impl FnMut(String) -> SessionEventLoop<FS>,
) -> Started {
    let (cpus, online) = queues();
    let handoff = Handoff::new(idle_handoff);
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    let mut ok = true;
    'spawn: for qid in 0..cpus {
        // Every queue must be registered before the kernel uses any; a
        // CPU that is not online gets one thread.
        let n = if online.contains(&qid) {
            per_queue.max(1)
        } else {
            1
        };
        for i in 0..n {
            let name = format!("fuser-ring-{qid}-{i}");
            let se = make_loop(name.clone());
            let tx = tx.clone();
            let handoff = handoff.clone();
            match thread::Builder::new()
                .name(name)
                .spawn(move || serve(&se, fd, qid, payload_cap, &handoff, &tx))
            {
                Ok(h) => threads.push(h),
                Err(e) => {
                    warn!("io_uring thread: {e}");
                    ok = false;
                    break 'spawn;
                }
            }
        }
    }
    drop(tx);
    for r in rx.iter().take(threads.len()) {
        if let Err(e) = r {
            if ok {
                warn!("FUSE over io_uring not used: {e}");
            }
            ok = false;
        }
    }
    Started { threads, ok }
}

fn serve<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    fd: RawFd,
    qid: usize,
    payload_cap: usize,
    handoff: &Arc<Handoff>,
    ready: &mpsc::Sender<io::Result<()>>,
) {
    pin_to_cpu(qid);
    let mut seat = handoff.seat();
    let setup = || -> io::Result<(IoUring<squeue::Entry128, cqueue::Entry>, Arc<Slot>)> {
        // Single issuer with deferred task work: the kernel hands this
        // thread its request when it waits in io_uring_enter, without
        // interrupting it (create 5-10 % faster in alternating runs).
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4)
            .or_else(|_| IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(4))?;
        let bufs = Buffers::new(payload_cap)?;
        let slot = Arc::new(Slot {
            bufs,
            ch: se.ch.sender(),
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        Ok((ring, slot))
    };
    let (mut ring, slot) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let qid16 = u16::try_from(qid).unwrap_or(u16::MAX);
    // The iovecs stay valid for the thread's life (the kernel reads them
    // when it takes the command, which may be after submit returns).
    let iov = [
        libc::iovec {
            iov_base: slot.bufs.header().cast(),
            iov_len: HEADER_SZ,
        },
        libc::iovec {
            iov_base: slot.bufs.payload().cast(),
            iov_len: slot.bufs.payload_cap,
        },
    ];
    let mut last = uring_cmd(fd, CMD_REGISTER, qid16, 0, Some(iov.as_ptr() as u64));
    // A failed registration completes at once (EAGAIN: the connection is
    // not initialised yet, retried); a good one stays pending until the
    // first request, which may already be there.
    let mut again = 0u32;
    let first = loop {
        // SAFETY: the entry's buffers (iov, slot) outlive the command.
        if let Err(e) = unsafe { ring.submission().push(&last) } {
            let _ = ready.send(Err(io::Error::other(format!("submission queue: {e}"))));
            return;
        }
        if let Err(e) = ring.submit() {
            let _ = ready.send(Err(e));
            return;
        }
        match ring.completion().next().map(|c| c.result()) {
            Some(r) if r == -libc::EAGAIN && again < 100 => {
                again += 1;
                thread::sleep(std::time::Duration::from_millis(10));
            }
            Some(r) if r < 0 => {
                let _ = ready.send(Err(io::Error::from_raw_os_error(-r)));
                return;
            }
            first => break first,
        }
    };
    let _ = ready.send(Ok(()));
    // `last` is pushed before each wait, but for the registration still
    // pending.
    let mut push = first.is_some();
    let mut large = false;
    if push {
        let (commit, l) = handle_sized(se, &slot);
        last = uring_cmd(fd, CMD_COMMIT_AND_FETCH, qid16, commit, None);
        large = l;
    }
    loop {
        if push {
            // The reply is committed (and the caller woken) in the wait.
            seat.before_wait(large);
        }
        // SAFETY: as at the first push.
        if push && unsafe { ring.submission().push(&last) }.is_err() {
            error!("io_uring queue {qid}: submission queue full");
            return;
        }
        push = true;
        match wait_and_handle(se, &mut ring, &slot, fd, qid16, &mut last) {
            Some(l) => large = l,
            None => return,
        }
    }
}

/// Requests moving more than this many bytes (a read's reply, a write's
/// data) are large: their thread waits at `SCHED_OTHER` afterwards (see
/// `handoff`).
const LARGE: u32 = 64 * 1024;

/// [`handle`], and whether the request was large.
fn handle_sized<FS: Filesystem>(se: &SessionEventLoop<FS>, slot: &Arc<Slot>) -> (u64, bool) {
    let in_sz = slot.bufs.read_u32(ENT_IN_OUT + 16);
    let commit = handle(se, slot);
    let out_sz = slot.bufs.read_u32(ENT_IN_OUT + 16);
    (commit, in_sz.max(out_sz) > LARGE)
}

/// Submit what is queued, wait for the next request, handle it and queue
/// its commit in `last`; whether it was large. None when the queue is done
/// (unmounted).
fn wait_and_handle<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    slot: &Arc<Slot>,
    fd: RawFd,
    qid: u16,
    last: &mut squeue::Entry128,
) -> Option<bool> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => {
                error!("io_uring queue {qid}: {e}");
                return None;
            }
        }
        let Some(r) = ring.completion().next().map(|c| c.result()) else {
            continue;
        };
        if r < 0 {
            match -r {
                libc::EINTR | libc::EAGAIN => {
                    // SAFETY: as at the first push.
                    if unsafe { ring.submission().push(last) }.is_err() {
                        return None;
                    }
                    continue;
                }
                libc::ENOTCONN | libc::ECANCELED | libc::ENODEV => {
                    debug!(
                        "io_uring queue {qid}: done ({})",
                        io::Error::from_raw_os_error(-r)
                    );
                    return None;
                }
                e => {
                    error!("io_uring queue {qid}: {}", io::Error::from_raw_os_error(e));
                    return None;
                }
            }
        }
        let (commit, large) = handle_sized(se, slot);
        *last = uring_cmd(fd, CMD_COMMIT_AND_FETCH, qid, commit, None);
        return Some(large);
    }
}

/// Dispatch the request in the slot's entry and wait for its reply;
/// returns the commit id.
fn handle<FS: Filesystem>(se: &SessionEventLoop<FS>, slot: &Arc<Slot>) -> u64 {
    let bufs = &slot.bufs;
    let commit_id = bufs.read_u64(ENT_IN_OUT + 8);
    let payload_sz = bufs.read_u32(ENT_IN_OUT + 16) as usize;
    let mut in_header = [0u8; IN_HEADER_SZ];
    // SAFETY: the header page holds the fuse_in_header at offset 0.
    unsafe { std::ptr::copy_nonoverlapping(bufs.header(), in_header.as_mut_ptr(), IN_HEADER_SZ) };
    let len = u32::from_ne_bytes([in_header[0], in_header[1], in_header[2], in_header[3]]) as usize;
    let opcode = u32::from_ne_bytes([in_header[4], in_header[5], in_header[6], in_header[7]]);
    let unique = u64::from_ne_bytes(in_header[8..16].try_into().unwrap_or([0; 8]));
    {
        let mut st = slot.lock();
        st.replied = false;
        st.stage = payload_sz > 0;
        st.staged.clear();
    }
    let op_size = len.checked_sub(IN_HEADER_SZ + payload_sz);
    let op_size = match op_size {
        Some(n) if n <= OP_IN_SZ && n % 8 == 0 && payload_sz <= bufs.payload_cap => n,
        _ => {
            error!("io_uring request {unique}: bad sizes (len {len}, payload {payload_sz})");
            slot.reply_error(unique, libc::EIO);
            return commit_id;
        }
    };
    let start = IN_HEADER_SZ + op_size;
    // SAFETY: the scratch page ends where the payload begins; the header
    // and argument struct (at most 168 bytes) are copied to its end, so
    // the request is one contiguous, 8-aligned slice.
    let data = unsafe {
        let p = bufs.payload().sub(start);
        std::ptr::copy_nonoverlapping(in_header.as_ptr(), p, IN_HEADER_SZ);
        std::ptr::copy_nonoverlapping(bufs.header().add(OP_IN), p.add(IN_HEADER_SZ), op_size);
        std::slice::from_raw_parts(p.cast_const(), start + payload_sz)
    };
    match RequestWithSender::new(ReplySender::Ring(RingReply(slot.clone())), data) {
        Some(req) => {
            if let Ok(Operation::Destroy(_)) = req.request.operation() {
                req.reply::<ReplyEmpty>().ok();
            } else {
                req.dispatch(se);
            }
        }
        None => slot.reply_error(unique, libc::EIO),
    }
    // The request (and its borrow of the payload) is gone; wait for the
    // reply if it was deferred, then move a staged body into place.
    let mut st = slot.lock();
    if opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET {
        // Never sent through a ring; should one come, it gets an empty
        // reply so that the entry is not lost.
        if !st.replied {
            slot.finish_empty(&mut st, unique, 0);
        }
    }
    while !st.replied {
        st = slot.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    if st.stage && !st.staged.is_empty() {
        bufs.write_payload(0, &st.staged);
        st.staged.clear();
    }
    st.stage = false;
    commit_id
}

/// The FUSE device's raw fd (for the ring commands).
pub(crate) fn device_fd(ch: &crate::channel::Channel) -> RawFd {
    use std::os::fd::AsFd;
    ch.as_fd().as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(cpu_list("0"), Some(vec![0]));
        assert_eq!(cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(cpu_list(""), Some(vec![]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
    }
}
