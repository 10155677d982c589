//! The hybrid logical clock that versions writes (docs/ARCHITECTURE.md §3).

/// Issues strictly increasing readings that follow the wall clock when it moves forward and
/// ignore it when it moves back. `observe` folds in versions seen elsewhere (the record a
/// write replaces, a peer's message), so a write ordered after another gets a larger version
/// even when this node's clock is behind.
#[derive(Debug, Default, Clone)]
pub struct Hlc {
    last_us: u64,
}

impl Hlc {
    /// A clock that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new reading: `max(now, last seen + 1)`; `None` once the clock has reached the end of
    /// its range (only a corrupt or hostile version can put it there), never a reading that
    /// wrapped around and would lose to the versions it must beat.
    pub fn tick(&mut self, now_us: u64) -> Option<u64> {
        self.last_us = now_us.max(self.last_us.checked_add(1)?);
        Some(self.last_us)
    }

    /// Remembers a reading made elsewhere.
    pub fn observe(&mut self, seen_us: u64) {
        self.last_us = self.last_us.max(seen_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_increase_even_when_the_clock_goes_back() {
        let mut hlc = Hlc::new();
        assert_eq!(hlc.tick(100), Some(100));
        assert_eq!(hlc.tick(50), Some(101));
        assert_eq!(hlc.tick(101), Some(102));
        assert_eq!(hlc.tick(500), Some(500));
    }

    #[test]
    fn an_observed_reading_from_the_future_orders_later_ticks_after_it() {
        let mut hlc = Hlc::new();
        hlc.observe(1_000_000);
        assert_eq!(hlc.tick(10), Some(1_000_001));
    }

    #[test]
    fn a_reading_at_the_end_of_the_range_refuses_to_wrap() {
        let mut hlc = Hlc::new();
        hlc.observe(u64::MAX);
        assert_eq!(hlc.tick(10), None);
    }
}
