//! Exponential back-off between retries, with the same arithmetic as the Go collector's
//! (`cenkalti/backoff`'s `ExponentialBackOff`, as configured by `retry_on_failure`).

use std::time::{Duration, Instant};

/// How a failed request is retried (`retry_on_failure`, resolved).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `false`: the first retryable failure is final.
    pub enabled: bool,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Give up once the next retry would start later than this after the first attempt.
    /// `None` retries forever (upstream's `max_elapsed_time: 0`).
    pub max_elapsed_time: Option<Duration>,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl Default for RetryPolicy {
    /// Upstream's defaults.
    fn default() -> Self {
        RetryPolicy {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Some(Duration::from_secs(300)),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// The delays of one request's retries.
pub struct Backoff<'a> {
    policy: &'a RetryPolicy,
    current: Duration,
    give_up_at: Option<Instant>,
}

impl<'a> Backoff<'a> {
    /// Starts the schedule now (the time of the first attempt).
    pub fn start(policy: &'a RetryPolicy) -> Self {
        Backoff {
            policy,
            current: policy.initial_interval,
            give_up_at: policy.max_elapsed_time.map(|max| Instant::now() + max),
        }
    }

    /// How long to wait before the next attempt, or `None` when retrying is over (disabled, or the
    /// retry would start after `max_elapsed_time`). A throttle hint from the server lengthens the
    /// wait to at least the hint, as upstream does (`max(backoff, throttle)`).
    pub fn next_delay(&mut self, throttle: Option<Duration>) -> Option<Duration> {
        if !self.policy.enabled {
            return None;
        }
        let mut delay = randomize(self.current, self.policy.randomization_factor);
        self.current = self.grow(self.current);
        if let Some(throttle) = throttle {
            delay = delay.max(throttle);
        }
        match self.give_up_at {
            Some(give_up_at) if Instant::now() + delay > give_up_at => None,
            _ => Some(delay),
        }
    }

    fn grow(&self, interval: Duration) -> Duration {
        let grown = interval.as_secs_f64() * self.policy.multiplier;
        if !grown.is_finite() || grown >= self.policy.max_interval.as_secs_f64() {
            self.policy.max_interval
        } else {
            Duration::from_secs_f64(grown)
        }
    }
}

/// A uniformly random duration in `[interval * (1 - factor), interval * (1 + factor)]`.
fn randomize(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let spread = interval.as_secs_f64() * factor;
    let low = interval.as_secs_f64() - spread;
    let seconds = low + rand::random::<f64>() * 2.0 * spread;
    Duration::from_secs_f64(seconds.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(randomization_factor: f64) -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(300),
            max_elapsed_time: None,
            multiplier: 2.0,
            randomization_factor,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn grows_by_the_multiplier_up_to_max_interval() {
        let policy = policy(0.0);
        let mut backoff = Backoff::start(&policy);
        let delays: Vec<u128> = (0..4)
            .map(|_| backoff.next_delay(None).unwrap().as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 300, 300]);
    }

    #[test]
    fn randomization_stays_within_the_factor() {
        let policy = policy(0.5);
        for _ in 0..200 {
            let delay = Backoff::start(&policy).next_delay(None).unwrap();
            assert!(
                delay >= Duration::from_millis(50) && delay <= Duration::from_millis(150),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn throttle_hint_is_a_lower_bound() {
        let policy = policy(0.0);
        let mut backoff = Backoff::start(&policy);
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_millis(1))),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn stops_when_the_next_retry_would_pass_max_elapsed_time() {
        let policy = RetryPolicy {
            max_elapsed_time: Some(Duration::from_millis(250)),
            ..policy(0.0)
        };
        let mut backoff = Backoff::start(&policy);
        assert!(backoff.next_delay(None).is_some()); // 100ms
        assert_eq!(backoff.next_delay(None), Some(Duration::from_millis(200)));
        // Nothing has been waited yet, but 400ms from now is past the 250ms budget.
        assert_eq!(backoff.next_delay(Some(Duration::from_millis(400))), None);
    }

    #[test]
    fn disabled_never_retries() {
        let policy = RetryPolicy {
            enabled: false,
            ..RetryPolicy::default()
        };
        assert_eq!(Backoff::start(&policy).next_delay(None), None);
    }
}
