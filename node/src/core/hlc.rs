//! The hybrid logical clock that versions writes (ARCHITECTURE §3).

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

    /// A new reading: `max(now, last seen + 1)`.
    pub fn tick(&mut self, now_us: u64) -> u64 {
        self.last_us = now_us.max(self.last_us + 1);
        self.last_us
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
        assert_eq!(hlc.tick(100), 100);
        assert_eq!(hlc.tick(50), 101);
        assert_eq!(hlc.tick(101), 102);
        assert_eq!(hlc.tick(500), 500);
    }

    #[test]
    fn an_observed_reading_from_the_future_orders_later_ticks_after_it() {
        let mut hlc = Hlc::new();
        hlc.observe(1_000_000);
        assert_eq!(hlc.tick(10), 1_000_001);
    }
}
