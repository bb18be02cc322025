//! Work on many independent items spread over the machine's cores: the items split into one
//! contiguous chunk per core, each chunk handled on its own thread, the results in the chunks'
//! order.

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
}
