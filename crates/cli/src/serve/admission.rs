//! Admission: at most `max-in-flight` requests run at once, at most `queue` wait for a place,
//! and the rest are refused at once (503 with `Retry-After`), so overload costs a refusal,
//! never an unbounded queue.
//!
//! A place is held by a [`Place`] until the request's call has ended (its body streamed or
//! abandoned), not only until the response head: a guest still streaming is still working.
//! A waiting request that is dropped (its client went away) leaves the queue at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The admission gate of one server.
#[derive(Debug)]
pub struct Admission {
    places: Arc<Semaphore>,
    max_in_flight: usize,
    queue: usize,
    waiting: AtomicUsize,
}

/// A request's place among those in flight; dropping it frees the place.
#[derive(Debug)]
pub struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

/// The queue is full: the request is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Admission {
    /// A gate for `max_in_flight` running and `queue` waiting requests.
    pub fn new(max_in_flight: usize, queue: usize) -> Admission {
        Admission {
            places: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A place now, or after waiting in the queue, or [`Full`] when the queue is full too.
    pub async fn admit(&self) -> Result<Place, Full> {
        if let Ok(p) = self.places.clone().try_acquire_owned() {
            return Ok(Place(p));
        }
        // Take a queue slot without ever going past the bound.
        let mut n = self.waiting.load(Ordering::Relaxed);
        loop {
            if n >= self.queue {
                return Err(Full);
            }
            match self
                .waiting
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let _slot = QueueSlot(&self.waiting);
        // The semaphore is never closed, so acquiring only ends with a permit.
        match self.places.clone().acquire_owned().await {
            Ok(p) => Ok(Place(p)),
            Err(_) => Err(Full),
        }
    }

    /// Requests waiting for a place now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Requests holding a place now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.places.available_permits()
    }
}

/// Leaves the queue when the wait ends, however it ends (a dropped future too).
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn beyond_the_places_and_the_queue_a_request_is_refused() {
        let gate = Arc::new(Admission::new(1, 1));
        let first = gate.admit().await.unwrap();
        assert_eq!(gate.in_flight(), 1);
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        while gate.queue_depth() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(gate.admit().await.unwrap_err(), Full, "queue of 1 is full");
        drop(first);
        waiter
            .await
            .unwrap()
            .expect("the waiter gets the freed place");
        assert_eq!((gate.in_flight(), gate.queue_depth()), (0, 0));
    }

    #[tokio::test]
    async fn with_no_queue_the_second_request_is_refused_at_once() {
        let gate = Admission::new(1, 0);
        let _first = gate.admit().await.unwrap();
        assert_eq!(gate.admit().await.unwrap_err(), Full);
    }

    #[tokio::test]
    async fn a_waiter_that_is_dropped_leaves_the_queue() {
        let gate = Arc::new(Admission::new(1, 1));
        let _first = gate.admit().await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        while gate.queue_depth() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.queue_depth(), 0);
    }
}
