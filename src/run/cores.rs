//! Work spread over the machine's cores: many independent items split into one contiguous
//! chunk per core, each chunk handled on its own thread, the results in the chunks' order; or
//! two independent tasks at once.

/// `work` on each chunk of `items` (one per core, at most 8), on scoped threads; the results
/// in order. A panic in a chunk is a panic here.
pub(super) fn per_chunk<T: Sync, R: Send>(items: &[T], work: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let size = items.len().div_ceil(cores).max(1);
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(size)
            .map(|chunk| s.spawn(move || work(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// `first` on a scoped thread and `second` on this one, at once; both results. A panic in
/// `first` is a panic here. With a crash or stall armed for the tests ([`crate::faults::armed`])
/// `first` runs, then `second`, so that their durable steps are counted in one order.
pub(super) fn both<A: Send, B>(
    first: impl FnOnce() -> A + Send,
    second: impl FnOnce() -> B,
) -> (A, B) {
    if crate::faults::armed() {
        let first = first();
        return (first, second());
    }
    std::thread::scope(|s| {
        let first = s.spawn(first);
        let second = second();
        let first = first
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (first, second)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_worked_on_once_in_order() {
        let items: Vec<u32> = (0..1001).collect();
        let chunks = per_chunk(&items, |chunk| {
            chunk.iter().map(|v| v * 2).collect::<Vec<_>>()
        });
        assert!(chunks.len() <= 8);
        let doubled: Vec<u32> = chunks.into_iter().flatten().collect();
        assert_eq!(doubled, (0..1001).map(|v| v * 2).collect::<Vec<u32>>());
        assert!(
            per_chunk(&Vec::<u8>::new(), |c| c.len())
                .iter()
                .all(|&n| n == 0)
        );
    }

    #[test]
    fn both_tasks_run_at_once_and_give_their_results() {
        // Each waits for the other's signal: one after the other, the first waits in vain.
        let wait = std::time::Duration::from_secs(10);
        let (to_second, from_first) = std::sync::mpsc::channel();
        let (to_first, from_second) = std::sync::mpsc::channel();
        let (a, b) = both(
            move || {
                to_second.send(1).ok();
                from_second.recv_timeout(wait).ok().map(|v: u32| v + 10)
            },
            move || {
                to_first.send(2).ok();
                from_first.recv_timeout(wait).ok().map(|v: u32| v + 20)
            },
        );
        assert_eq!((a, b), (Some(12), Some(21)));
    }
}
