//! Which backend gets a request: round-robin over the healthy ones (pure).

/// Picks a backend index.
///
/// `start` is the round-robin counter, `now` the current time and `cooling_until[i]` the time
/// backend `i`'s cooldown ends (0 when it never failed), all in the same unit. `tried` lists
/// the backends this request already failed to connect to.
///
/// The first backend at or after `start` (wrapping) that is neither cooling down nor tried
/// wins. On a first try (`tried` empty) with every backend cooling down, the one whose cooldown
/// ends first is tried anyway: a request is never refused for a backend that may be back. A
/// failover (`tried` not empty) only goes to healthy backends.
pub(crate) fn pick(
    start: usize,
    now: u64,
    cooling_until: &[u64],
    tried: &[usize],
) -> Option<usize> {
    let n = cooling_until.len();
    if n == 0 {
        return None;
    }
    let candidates = (0..n)
        .map(|k| (start % n + k) % n)
        .filter(|i| !tried.contains(i));
    let mut earliest: Option<usize> = None;
    for i in candidates {
        if cooling_until[i] <= now {
            return Some(i);
        }
        if earliest.is_none_or(|e| cooling_until[i] < cooling_until[e]) {
            earliest = Some(i);
        }
    }
    if tried.is_empty() {
        earliest
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backends_no_pick() {
        assert_eq!(pick(0, 10, &[], &[]), None);
    }

    #[test]
    fn healthy_backends_take_turns() {
        let picks: Vec<_> = (0..6).map(|s| pick(s, 100, &[0, 0, 0], &[])).collect();
        assert_eq!(
            picks,
            [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
        );
    }

    #[test]
    fn cooling_backends_are_skipped() {
        let until = [0, 150, 0];
        let picks: Vec<_> = (0..4).map(|s| pick(s, 100, &until, &[])).collect();
        assert_eq!(picks, [Some(0), Some(2), Some(2), Some(0)]);
    }

    #[test]
    fn an_ended_cooldown_makes_a_backend_healthy_again() {
        assert_eq!(pick(1, 150, &[0, 150, 0], &[]), Some(1));
        assert_eq!(pick(1, 149, &[0, 150, 0], &[]), Some(2));
    }

    #[test]
    fn all_cooling_tries_the_first_to_recover() {
        assert_eq!(pick(0, 100, &[300, 200, 250], &[]), Some(1));
        assert_eq!(pick(2, 100, &[300, 200, 250], &[]), Some(1));
        assert_eq!(pick(7, 100, &[300], &[]), Some(0));
    }

    #[test]
    fn failover_goes_only_to_untried_healthy_backends() {
        assert_eq!(pick(0, 100, &[0, 0, 0], &[0]), Some(1));
        assert_eq!(pick(0, 100, &[0, 500, 0], &[0]), Some(2));
        assert_eq!(pick(0, 100, &[0, 500, 0], &[0, 2]), None);
        assert_eq!(pick(0, 100, &[0], &[0]), None);
    }
}
