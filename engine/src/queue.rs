//! [`SendQueue`]: a session's bounded outgoing queue. The campaign task and the API push
//! frames with [`SendQueue::try_push`], which never waits: a full queue hands the frame back
//! (the caller counts it as dropped). The session's own task is the only consumer.
//!
//! It lives inside the session (no separate allocation, no per-wait allocation) because it is
//! paid for by every connection: a general-purpose channel costs about 300 bytes more per
//! idle connection here.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use tokio_tungstenite::tungstenite::Message;

/// A bounded single-consumer queue of frames.
pub(crate) struct SendQueue {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    frames: VecDeque<Message>,
    /// The consumer, when it waits for a frame or for the close signal.
    waker: Option<Waker>,
    /// Set by [`SendQueue::close`]: the consumer should stop and close its connection.
    closed: bool,
}

impl SendQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                waker: None,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot panic halfway: recover from poisoning.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`, or hands it back when the queue is full.
    pub(crate) fn try_push(&self, frame: Message) -> Result<(), Message> {
        let waker = {
            let mut inner = self.lock();
            if inner.frames.len() >= self.capacity {
                return Err(frame);
            }
            inner.frames.push_back(frame);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Frames that can still be queued.
    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.lock().frames.len())
    }

    /// The next frame, if one is queued.
    pub(crate) fn try_pop(&self) -> Option<Message> {
        self.lock().frames.pop_front()
    }

    /// Waits for the next frame; `None` once the queue is closed (frames still queued then
    /// stay for [`SendQueue::try_pop`]). Cancel-safe: a frame is only taken when returned.
    pub(crate) async fn pop(&self) -> Option<Message> {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.closed {
                return Poll::Ready(None);
            }
            match inner.frames.pop_front() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => {
                    register(&mut inner.waker, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Tells the consumer to stop (wakes it).
    pub(crate) fn close(&self) {
        let waker = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Completes once [`SendQueue::close`] has been called.
    pub(crate) async fn closed(&self) {
        poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.closed {
                Poll::Ready(())
            } else {
                register(&mut inner.waker, cx.waker());
                Poll::Pending
            }
        })
        .await;
    }

    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Drops every queued frame; returns how many there were.
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn clear(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.frames.len();
        inner.frames.clear();
        n
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_wakes_its_consumer() {
        let q = std::sync::Arc::new(SendQueue::new(2));
        assert!(q.try_push(Message::text("a")).is_ok());
        assert!(q.try_push(Message::text("b")).is_ok());
        assert!(
            q.try_push(Message::text("c")).is_err(),
            "full: the frame comes back"
        );
        assert_eq!(q.pop().await, Some(Message::text("a")));
        assert_eq!(q.try_pop(), Some(Message::text("b")));
        assert_eq!(q.try_pop(), None);
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        assert!(q.try_push(Message::text("d")).is_ok());
        assert_eq!(consumer.await.expect("consumer"), Some(Message::text("d")));
        assert!(q.try_push(Message::text("e")).is_ok());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.closed().await }
        });
        tokio::task::yield_now().await;
        q.close();
        waiter.await.expect("woken by close");
        assert!(q.is_closed());
        assert_eq!(q.pop().await, None, "closed: no more frames through pop");
        assert_eq!(q.clear(), 1, "queued frames stay for the close path");
    }
}
