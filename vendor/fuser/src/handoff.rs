//! Idle hand-off for ring threads (circlefs patch): `SCHED_IDLE` while nothing else competes for their CPU, `SCHED_OTHER` for a while after any sign that something does.
//!
//! Why: a ring thread answers a request on its caller's CPU and wakes the
//! caller while it still runs there. The scheduler then places the caller
//! on an idle CPU if there is one, so its next request goes to that CPU's
//! queue and wakes a halted vCPU: the round trip the per-CPU queues exist
//! to avoid. A CPU whose only runnable tasks are `SCHED_IDLE` counts as
//! idle for that choice (`sched_idle_cpu`), so with the ring thread at
//! `SCHED_IDLE` the caller wakes where it was, and preempts the ring
//! thread, which is about to wait anyway.
//!
//! The price: a `SCHED_IDLE` thread gets almost no CPU while a normal task
//! wants it (weight 3 against 1024), so a request could wait tens of
//! milliseconds behind a CPU-bound process. Each thread therefore watches
//! its own run delay (`/proc/thread-self/schedstat`, the time it spent
//! runnable but not running) through a leaky bucket: waits at `SCHED_IDLE`
//! fill it, time drains it at a tenth of real time, and when it holds
//! more than [`STALL_NS`] every ring thread goes back to `SCHED_OTHER` for
//! a hold that doubles, from [`HOLD_MIN_NS`] up to [`HOLD_MAX_NS`], while
//! competition comes back within [`RESET_AFTER`] hold lengths of the last. A quiet
//! machine's waits (the caller's own threads, the daemon's, kernel
//! workers: 0.3-1.3 ms now and then during `git add`) seldom fill it; a
//! CPU-bound process fills it within two or three requests (12 ms each,
//! typically), which costs 40-90 ms once, then a doubling hold. A thread
//! kept waiting in the middle of a request may hold a lock other requests
//! need (the store's write lock, say), so the stall can reach them too:
//! once per contention onset, not more.
//!
//! Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20),
//! so the hand-off is used only when a probe thread could go there and
//! back; otherwise every ring thread stays `SCHED_OTHER`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use log::debug;
use log::info;
use log::warn;

/// Waits for the CPU at `SCHED_IDLE` beyond this (in the leaky bucket,
/// which drains at [`DRAIN`] of real time) end the hand-off for a hold.
pub(crate) const STALL_NS: u64 = 20_000_000;
/// The bucket drains by 1/DRAIN of the time passed.
pub(crate) const DRAIN: u64 = 10;
/// The run delay is read at most this often (a thread cannot wait longer
/// than the time that passed, so the bucket misses nothing).
pub(crate) const CHECK_NS: u64 = 1_000_000;
/// First hold after a stall.
pub(crate) const HOLD_MIN_NS: u64 = 100_000_000;
/// Longest hold.
pub(crate) const HOLD_MAX_NS: u64 = 64_000_000_000;
/// A stall within this many hold lengths of the last hold's end doubles
/// the hold; later, the hold starts again from [`HOLD_MIN_NS`]. Eight, so
/// that competition coming and going (a CPU-bound burst every few hundred
/// milliseconds) soon finds the hand-off off for a minute rather than
/// paying a stall at each burst.
pub(crate) const RESET_AFTER: u64 = 8;

/// A ring thread and its scheduling policy, as last set.
struct Member {
    tid: libc::pid_t,
    idle: AtomicBool,
}

#[derive(Default)]
struct State {
    members: Vec<Arc<Member>>,
    /// Length of the last hold.
    hold: u64,
}

/// The hand-off shared by a session's ring threads.
pub(crate) struct Handoff {
    on: bool,
    /// No thread goes idle before this (CLOCK_MONOTONIC ns).
    until: AtomicU64,
    state: Mutex<State>,
}

impl Handoff {
    /// A hand-off, used when `wanted` and the process may leave
    /// `SCHED_IDLE` again.
    pub(crate) fn new(wanted: bool) -> Arc<Handoff> {
        let on = wanted && probe();
        if wanted {
            info!(
                "ring threads: idle hand-off {}",
                if on {
                    "on"
                } else {
                    "off (SCHED_IDLE could not be left: no CAP_SYS_NICE)"
                }
            );
        }
        Arc::new(Handoff {
            on,
            until: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register the calling thread (at `SCHED_OTHER`); its seat.
    pub(crate) fn seat(self: &Arc<Handoff>) -> Seat {
        let mut seat = Seat {
            handoff: self.clone(),
            me: None,
            schedstat: None,
            last_delay: 0,
            bucket: 0,
            last_at: 0,
        };
        if !self.on {
            return seat;
        }
        seat.schedstat = File::open("/proc/thread-self/schedstat").ok();
        if seat.schedstat.is_none() {
            return seat;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let me = Arc::new(Member {
            tid,
            idle: AtomicBool::new(false),
        });
        self.lock().members.push(me.clone());
        seat.me = Some(me);
        seat.last_delay = seat.run_delay().unwrap_or(0);
        seat.last_at = monotonic_ns();
        seat
    }

    /// Start a hold: every ring thread back to `SCHED_OTHER`, for twice
    /// the last hold if that ended less than [`RESET_AFTER`] of its own
    /// lengths ago, else for the shortest.
    fn hold(&self, now: u64, bucket: u64) {
        let mut st = self.lock();
        let until = self.until.load(Ordering::Relaxed);
        let recent = until.saturating_add(st.hold.saturating_mul(RESET_AFTER));
        let hold = if st.hold > 0 && now < recent {
            st.hold.saturating_mul(2).min(HOLD_MAX_NS)
        } else {
            HOLD_MIN_NS
        };
        // A warning: rare (holds double while competition lasts) and the
        // one sign that the hand-off is paused.
        warn!(
            "ring threads: {} ms waiting for the CPU at SCHED_IDLE; SCHED_OTHER for {} ms",
            bucket / 1_000_000,
            hold / 1_000_000
        );
        st.hold = hold;
        self.until
            .store(now.saturating_add(hold), Ordering::Relaxed);
        for m in st.members.iter().filter(|m| m.idle.load(Ordering::Relaxed)) {
            if set_policy(m.tid, libc::SCHED_OTHER) {
                m.idle.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// A ring thread's place in the hand-off.
pub(crate) struct Seat {
    handoff: Arc<Handoff>,
    /// None: the hand-off is off.
    me: Option<Arc<Member>>,
    schedstat: Option<File>,
    /// Run delay at the last reading, ns.
    last_delay: u64,
    /// Leaky bucket of waits for the CPU while idle, ns.
    bucket: u64,
    /// Time of the last reading (CLOCK_MONOTONIC ns).
    last_at: u64,
}

impl Seat {
    /// Before the thread commits its reply and waits: start a hold if
    /// this thread was kept from its CPU at `SCHED_IDLE`, else choose its
    /// policy for the wait: `SCHED_OTHER` after a `large` request
    /// (streaming I/O, where the reader and the ring threads gain from
    /// spreading over CPUs) and during a hold, `SCHED_IDLE` otherwise.
    pub(crate) fn before_wait(&mut self, large: bool) {
        let Some(me) = self.me.as_deref() else {
            return;
        };
        let now = monotonic_ns();
        let idle = me.idle.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(self.last_at);
        if elapsed >= CHECK_NS {
            let delay = self.run_delay().unwrap_or(self.last_delay);
            let waited = delay.saturating_sub(self.last_delay);
            self.last_delay = delay;
            self.last_at = now;
            // Waits count while the thread is idle (the policy since the
            // last reading, but for a hold or a large request between).
            self.bucket = match idle {
                true => self
                    .bucket
                    .saturating_sub(elapsed / DRAIN)
                    .saturating_add(waited),
                false => 0,
            };
            if self.bucket > STALL_NS {
                let bucket = std::mem::take(&mut self.bucket);
                self.handoff.hold(now, bucket);
                return;
            }
        }
        let want = !large && now >= self.handoff.until.load(Ordering::Relaxed);
        if want != idle {
            // Under the lock, so that a hold started meanwhile wins.
            let _st = self.handoff.lock();
            let want = want && now >= self.handoff.until.load(Ordering::Relaxed);
            let policy = if want {
                libc::SCHED_IDLE
            } else {
                libc::SCHED_OTHER
            };
            if me.idle.load(Ordering::Relaxed) != want && set_policy(0, policy) {
                me.idle.store(want, Ordering::Relaxed);
            }
        }
    }

    /// The thread's time runnable but not running, ns (second field of
    /// `/proc/thread-self/schedstat`).
    fn run_delay(&self) -> Option<u64> {
        let mut b = [0u8; 96];
        let n = self.schedstat.as_ref()?.read_at(&mut b, 0).ok()?;
        field(&b[..n], 1)
    }
}

/// The `i`th space-separated decimal field of `b`.
fn field(b: &[u8], i: usize) -> Option<u64> {
    std::str::from_utf8(b)
        .ok()?
        .split_ascii_whitespace()
        .nth(i)?
        .parse()
        .ok()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Set thread `tid`'s policy (0: the calling thread).
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param; a thread of this process.
    let r = unsafe { libc::sched_setscheduler(tid, policy, &p) };
    if r != 0 {
        debug!(
            "ring threads: policy {policy} for {tid}: {}",
            std::io::Error::last_os_error()
        );
    }
    r == 0
}

/// Whether a thread can go to `SCHED_IDLE` and back (a throwaway thread,
/// so that a failed return strands nobody).
fn probe() -> bool {
    std::thread::Builder::new()
        .name("fuser-probe".into())
        .spawn(|| set_policy(0, libc::SCHED_IDLE) && set_policy(0, libc::SCHED_OTHER))
        .ok()
        .and_then(|h| h.join().ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        assert_eq!(field(b"123 4567 89\n", 1), Some(4567));
        assert_eq!(field(b"123", 1), None);
    }

    #[test]
    fn a_seat_without_the_handoff_does_nothing() {
        let h = Handoff::new(false);
        let mut s = h.seat();
        s.before_wait(false);
        assert!(s.me.is_none());
        assert!(h.lock().members.is_empty());
    }

    fn idle(s: &Seat) -> bool {
        s.me.as_ref().unwrap().idle.load(Ordering::Relaxed)
    }

    /// Put the seat's thread at SCHED_IDLE, as `before_wait` does outside
    /// a hold.
    fn go_idle(s: &Seat) {
        assert!(set_policy(0, libc::SCHED_IDLE));
        s.me.as_ref().unwrap().idle.store(true, Ordering::Relaxed);
    }

    /// Fill the seat's bucket to twice its limit, as waits would, and make
    /// the next `before_wait` read the run delay.
    fn stalled(s: &mut Seat) {
        s.bucket = 2 * STALL_NS;
        s.last_at = monotonic_ns().saturating_sub(CHECK_NS);
    }

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: reads a thread's policy.
        unsafe { libc::sched_getscheduler(tid) }
    }

    fn until(h: &Handoff) -> u64 {
        h.until.load(Ordering::Relaxed)
    }

    #[test]
    fn a_stalled_idle_thread_puts_every_thread_back_for_a_doubling_hold() {
        let h = Handoff::new(true);
        if !h.on {
            eprintln!("no CAP_SYS_NICE: the hand-off is off, nothing to test");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<libc::pid_t>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h2 = h.clone();
        let other = std::thread::spawn(move || {
            let s = h2.seat();
            go_idle(&s);
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().unwrap();
        });
        let other_tid = rx.recv().unwrap();
        assert_eq!(policy(other_tid), libc::SCHED_IDLE);
        let mut me = h.seat();
        go_idle(&me);
        stalled(&mut me);
        me.before_wait(false);
        assert!(
            h.lock()
                .members
                .iter()
                .all(|m| !m.idle.load(Ordering::Relaxed))
        );
        assert_eq!(h.lock().hold, HOLD_MIN_NS);
        assert!(until(&h) > monotonic_ns());
        assert_eq!(policy(0), libc::SCHED_OTHER);
        assert_eq!(policy(other_tid), libc::SCHED_OTHER);
        // During the hold the thread stays SCHED_OTHER.
        me.before_wait(false);
        assert_eq!(policy(0), libc::SCHED_OTHER);
        // A stall again soon after the hold (within eight of its lengths)
        // doubles it.
        h.until.store(
            monotonic_ns().saturating_sub(RESET_AFTER * HOLD_MIN_NS / 2),
            Ordering::Relaxed,
        );
        go_idle(&me);
        stalled(&mut me);
        me.before_wait(false);
        assert_eq!(h.lock().hold, 2 * HOLD_MIN_NS);
        assert_eq!(policy(0), libc::SCHED_OTHER);
        // Later than that, a stall starts again from the shortest.
        h.until.store(
            monotonic_ns().saturating_sub(RESET_AFTER * 2 * HOLD_MIN_NS + 1),
            Ordering::Relaxed,
        );
        go_idle(&me);
        stalled(&mut me);
        me.before_wait(false);
        assert_eq!(h.lock().hold, HOLD_MIN_NS);
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }

    #[test]
    fn a_thread_waits_idle_outside_a_hold() {
        let h = Handoff::new(true);
        if !h.on {
            eprintln!("no CAP_SYS_NICE: the hand-off is off, nothing to test");
            return;
        }
        let mut me = h.seat();
        me.before_wait(false);
        assert!(idle(&me));
        assert_eq!(policy(0), libc::SCHED_IDLE);
        // Waits while SCHED_OTHER do not count: after a hold the bucket
        // starts empty.
        assert!(set_policy(0, libc::SCHED_OTHER));
        me.me.as_ref().unwrap().idle.store(false, Ordering::Relaxed);
        stalled(&mut me);
        me.before_wait(false);
        assert_eq!(me.bucket, 0);
        assert_eq!(h.lock().hold, 0);
        assert_eq!(policy(0), libc::SCHED_IDLE);
        // A bucket below the limit drains.
        me.bucket = STALL_NS;
        me.last_at = monotonic_ns().saturating_sub(10 * CHECK_NS);
        me.before_wait(false);
        assert!(me.bucket < STALL_NS, "{}", me.bucket);
        assert_eq!(h.lock().hold, 0);
        // After a large request the thread waits at SCHED_OTHER, and goes
        // idle again after the next small one.
        me.before_wait(true);
        assert_eq!(policy(0), libc::SCHED_OTHER);
        assert!(!idle(&me));
        me.before_wait(false);
        assert_eq!(policy(0), libc::SCHED_IDLE);
        assert!(set_policy(0, libc::SCHED_OTHER));
    }
}
