//! Fault injectors for crash tests: a stream thread given one fails at a
//! [`FaultPoint`] as if its process had crashed there.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use brook_runtime::thread::{FaultInjector, FaultPoint};

/// Fails once, the `nth` time (0: the first) `point` is reached.
#[derive(Debug)]
pub struct CrashOnce {
    point: FaultPoint,
    countdown: AtomicU32,
    fired: AtomicBool,
}

impl CrashOnce {
    /// Fails at the `nth` time (counting from 0) `point` is reached.
    pub fn at(point: FaultPoint, nth: u32) -> Self {
        CrashOnce {
            point,
            countdown: AtomicU32::new(nth),
            fired: AtomicBool::new(false),
        }
    }

    /// Whether it has failed the thread.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl FaultInjector for CrashOnce {
    fn inject(&self, point: FaultPoint) -> bool {
        if point != self.point || self.fired() {
            return false;
        }
        if self.countdown.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.fired.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

/// Fails at each of its points once, in order: the first time the first
/// point is reached, then the first time the second one is reached after
/// that, and so on (one crash per commit when the points are commit steps).
#[derive(Debug)]
pub struct CrashOnceAtEach(Mutex<Vec<FaultPoint>>);

impl CrashOnceAtEach {
    /// Crashes at `points`, in order.
    pub fn new(points: &[FaultPoint]) -> Self {
        CrashOnceAtEach(Mutex::new(points.to_vec()))
    }

    /// The points not reached yet.
    pub fn left(&self) -> usize {
        self.0.lock().map_or(usize::MAX, |p| p.len())
    }
}

impl FaultInjector for CrashOnceAtEach {
    fn inject(&self, point: FaultPoint) -> bool {
        let Ok(mut points) = self.0.lock() else {
            return false;
        };
        if points.first() == Some(&point) {
            points.remove(0);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_once_fires_at_the_nth_time_only() {
        let c = CrashOnce::at(FaultPoint::BeforeProduce, 2);
        let hits: Vec<bool> = (0..5)
            .map(|_| c.inject(FaultPoint::BeforeProduce))
            .collect();
        assert_eq!(hits, [false, false, true, false, false]);
        assert!(c.fired());
        let each = CrashOnceAtEach::new(&[FaultPoint::BeforeProduce, FaultPoint::BeforeProduce]);
        assert!(each.inject(FaultPoint::BeforeProduce));
        assert_eq!(each.left(), 1);
    }
}
