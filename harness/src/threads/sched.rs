//! The schedule of the `threads` target: a shuttle scheduler whose every
//! choice comes from one seed, the program's `config.schedule`, so a
//! failing interleaving replays from its `.ops` file.
//!
//! At each scheduling point the running task keeps the CPU with
//! probability `1 - 1/stick` and otherwise a runnable task is drawn
//! uniformly; `stick` (1, 2, 4 or 8) comes from the seed's top two bits,
//! so some seeds preempt at nearly every point (the random walk) and others
//! rarely (the few, well-placed preemptions that bounded search favours).

use std::sync::{Arc, Mutex};

use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};

/// One task switch: at scheduling point `point`, task `task` (0 is the
/// main task, logical thread `tN` is task N + 1) was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The scheduling point, counted from 0.
    pub point: u32,
    /// The shuttle task that runs from there.
    pub task: usize,
}

/// What the scheduler saw; shared with the executor, which reads it after
/// the execution.
#[derive(Debug, Default)]
pub struct Log {
    /// Scheduling points of the execution.
    pub points: u32,
    /// The switches, in order (capped at [`MAX_SWITCHES`]).
    pub switches: Vec<Switch>,
}

/// Most switches the log keeps (a trace shows them all).
pub const MAX_SWITCHES: usize = 4096;

/// A seeded scheduler for exactly one execution.
#[derive(Debug)]
pub struct SeededScheduler {
    state: u64,
    seed: u64,
    stick: u64,
    started: bool,
    log: Arc<Mutex<Log>>,
}

impl SeededScheduler {
    /// A scheduler for one execution with `seed`, logging into `log`.
    pub fn new(seed: u64, log: Arc<Mutex<Log>>) -> SeededScheduler {
        SeededScheduler {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            seed,
            stick: 1 << (seed >> 62),
            started: false,
            log,
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

impl Scheduler for SeededScheduler {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.started {
            return None;
        }
        self.started = true;
        Some(Schedule::new(self.seed))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        if runnable.is_empty() {
            return None;
        }
        let keep = current.filter(|c| {
            !is_yielding && runnable.iter().any(|t| t.id() == *c) && self.below(self.stick) != 0
        });
        let chosen = match keep {
            Some(c) => c,
            None => runnable[self.below(runnable.len() as u64) as usize].id(),
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if current != Some(chosen) && log.switches.len() < MAX_SWITCHES {
            let point = log.points;
            log.switches.push(Switch {
                point,
                task: usize::from(chosen),
            });
        }
        log.points += 1;
        Some(chosen)
    }

    fn next_u64(&mut self) -> u64 {
        self.next()
    }
}
