//! The proxy's threads, reused: a connection's handler and its relay's
//! second direction each run on a parked thread when one is free, else on
//! a new one. Starting a thread (stack mapping, guard page, clone) cost
//! about 20 µs of each connection's set-up, twice; waking a parked one
//! costs a futex wake. How many run at once is still bounded by the
//! proxy's connection limit (two threads per connection at most).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send + 'static>;

const STACK: usize = 256 << 10;
/// A parked thread with no job for this long exits.
const KEEP: Duration = Duration::from_secs(10);
/// At most this many threads park; others exit once their job is done, so
/// a burst of connections leaves no more than this many stacks behind.
const MAX_PARKED: usize = 8;

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    parked: usize,
}

/// Threads that run jobs and then wait a while for another.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    name: &'static str,
}

/// The pool of every proxy in this process.
pub(crate) static THREADS: Pool = Pool::new("proxy");

impl Pool {
    const fn new(name: &'static str) -> Pool {
        Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                parked: 0,
            }),
            ready: Condvar::new(),
            name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `job` on a parked thread, or on a new one; `Err` only when
    /// none was parked and none could be started (the job is dropped).
    pub(crate) fn run(&'static self, job: Job) -> std::io::Result<()> {
        let mut q = self.lock();
        // A parked thread for every queued job and this one: it is taken.
        if q.parked > q.jobs.len() {
            q.jobs.push_back(job);
            drop(q);
            self.ready.notify_one();
            return Ok(());
        }
        drop(q);
        std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(STACK)
            .spawn(move || self.work(job))
            .map(drop)
    }

    fn work(&self, mut job: Job) {
        loop {
            job();
            match self.next() {
                Some(j) => job = j,
                None => return,
            }
        }
    }

    /// Waits for the next job; `None` when the thread should exit.
    fn next(&self) -> Option<Job> {
        let mut q = self.lock();
        if q.parked >= MAX_PARKED {
            return None;
        }
        q.parked += 1;
        let until = Instant::now() + KEEP;
        loop {
            if let Some(job) = q.jobs.pop_front() {
                q.parked -= 1;
                return Some(job);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Under the lock, with no job queued: none is left behind.
                q.parked -= 1;
                return None;
            }
            q = match self.ready.wait_timeout(q, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    static TEST: Pool = Pool::new("pool-test");

    fn thread_id_of(pool: &'static Pool) -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        pool.run(Box::new(move || {
            let _ = tx.send(std::thread::current().id());
        }))
        .unwrap();
        rx.recv().unwrap()
    }

    #[test]
    fn a_finished_thread_takes_the_next_job() {
        let first = thread_id_of(&TEST);
        // Parked once its job is done; wait until it is.
        while TEST.lock().parked == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(thread_id_of(&TEST), first);
    }

    #[test]
    fn jobs_run_at_once_each_on_its_own_thread() {
        static BUSY: Pool = Pool::new("pool-busy");
        // Every job waits for all of them to start: only passes if none
        // waits behind another.
        let n = 4;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            let (b, tx) = (barrier.clone(), tx.clone());
            BUSY.run(Box::new(move || {
                b.wait();
                let _ = tx.send(std::thread::current().id());
            }))
            .unwrap();
        }
        barrier.wait();
        let mut ids: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
        ids.sort_by_key(|i| format!("{i:?}"));
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
