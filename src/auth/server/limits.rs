//! Rate limits of sign-in (issue 14 item 7): per client address and per client id, a fixed window
//! per key. In memory and per replica, like Muster's own limiter (#506).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::time::Instant;

/// Keys tracked before stale windows are dropped.
const SWEEP_AT: usize = 10_000;

pub(super) struct Limiter {
    per_window: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub(super) fn new(per_window: u32, window: Duration) -> Self {
        Self { per_window, window, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt for `key`; `Err(retry_after)` past the limit.
    pub(super) fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= SWEEP_AT {
            let window = self.window;
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let (start, count) = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            return Err(self.window.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let limiter = Limiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert!(limiter.check_at("ip:1", start).is_ok() && limiter.check_at("ip:1", start).is_ok());
        assert_eq!(limiter.check_at("ip:1", start), Err(Duration::from_secs(60)));
        assert!(limiter.check_at("ip:2", start).is_ok(), "per key");
        assert!(limiter.check_at("ip:1", start + Duration::from_secs(60)).is_ok());
    }
}
