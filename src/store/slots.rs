//! Call slots with two priorities, for a store that bounds its calls in flight (the S3 store).
//!
//! A lock decision (a read, a conditional write, a read-back) is what a client is waiting on,
//! and a lease is stamped when its write is made: it must not queue behind reads that nobody is
//! waiting on right now (a lock's watcher polling, an orphan watch, a list). So a caller says
//! which it is ([`Priority`]): a freed slot goes to the decision that has waited longest, and to
//! background work only when no decision waits; and background work may hold only some of the
//! slots, so that decisions find some free even while watchers fill their share.
//!
//! Every wait has an end: a caller that gets no slot within its bound gets none, and must not
//! make its call later (a write sent after its caller was told it failed could land unseen).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Which calls a slot goes to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Part of a lock decision, or of answering a client now: served first.
    Decision,
    /// Background work (lock watchers' polls, orphan watches, lists): served when no decision
    /// waits, and within its share of the slots.
    Background,
}

impl Priority {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Decision => "decision",
            Priority::Background => "background",
        }
    }
}

#[derive(Debug)]
pub struct CallSlots {
    state: Mutex<State>,
    /// The most slots background work may hold at once.
    background_max: usize,
}

#[derive(Debug)]
struct State {
    free: usize,
    background_in_use: usize,
    /// Waiting callers of each priority, in arrival order: (id, where to say it got a slot).
    decisions: VecDeque<(u64, oneshot::Sender<()>)>,
    background: VecDeque<(u64, oneshot::Sender<()>)>,
    next_id: u64,
}

impl State {
    fn queue(&mut self, priority: Priority) -> &mut VecDeque<(u64, oneshot::Sender<()>)> {
        match priority {
            Priority::Decision => &mut self.decisions,
            Priority::Background => &mut self.background,
        }
    }

    fn take(&mut self, priority: Priority) {
        self.free -= 1;
        if priority == Priority::Background {
            self.background_in_use += 1;
        }
    }

    fn give_back(&mut self, priority: Priority) {
        self.free += 1;
        if priority == Priority::Background {
            self.background_in_use -= 1;
        }
    }

    /// Hands free slots to waiting callers: decisions first, then background work within its
    /// share.
    fn dispatch(&mut self, background_max: usize) {
        while self.free > 0 {
            let (priority, granted) = if let Some((_, tx)) = self.decisions.pop_front() {
                (Priority::Decision, tx)
            } else if self.background_in_use < background_max {
                match self.background.pop_front() {
                    Some((_, tx)) => (Priority::Background, tx),
                    None => return,
                }
            } else {
                return;
            };
            self.take(priority);
            if granted.send(()).is_err() {
                // Its caller is gone (it leaves the queue before it drops its receiver, so
                // this is only a leaked wait): the slot stays free.
                self.give_back(priority);
            }
        }
    }
}

/// One call's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<CallSlots>,
    priority: Priority,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.priority);
    }
}

/// A caller waiting in line. Dropped before it got its slot (it timed out, or its caller went
/// away), it leaves the line; dropped after the slot was handed to it but before it took it, it
/// gives the slot back.
struct Waiting {
    slots: Arc<CallSlots>,
    priority: Priority,
    id: u64,
    granted: oneshot::Receiver<()>,
    took: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.took {
            return;
        }
        let mut state = self.slots.lock();
        let queue = state.queue(self.priority);
        if let Some(at) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(at);
            return;
        }
        // Out of the line: the slot was handed over under this same mutex, so it is here.
        if self.granted.try_recv().is_ok() {
            state.give_back(self.priority);
            state.dispatch(self.slots.background_max);
        }
    }
}

impl CallSlots {
    /// `total` slots, of which background work may hold at most `background_max`.
    pub fn new(total: usize, background_max: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: total,
                background_in_use: 0,
                decisions: VecDeque::new(),
                background: VecDeque::new(),
                next_id: 0,
            }),
            background_max: background_max.min(total),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("call slots mutex poisoned")
    }

    /// A slot for one call, if one comes free for this priority within `within`; `None`
    /// otherwise, and the call must then not be made.
    pub async fn acquire(self: &Arc<Self>, priority: Priority, within: Duration) -> Option<Slot> {
        let slot = || Slot {
            slots: self.clone(),
            priority,
        };
        let mut waiting = {
            let mut state = self.lock();
            // Free, and nobody of this priority (or above) is ahead in line.
            let may_take = state.free > 0
                && state.decisions.is_empty()
                && match priority {
                    Priority::Decision => true,
                    Priority::Background => {
                        state.background.is_empty() && state.background_in_use < self.background_max
                    }
                };
            if may_take {
                state.take(priority);
                return Some(slot());
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.queue(priority).push_back((id, tx));
            Waiting {
                slots: self.clone(),
                priority,
                id,
                granted: rx,
                took: false,
            }
        };
        match tokio::time::timeout(within, &mut waiting.granted).await {
            Ok(Ok(())) => {
                waiting.took = true;
                Some(slot())
            }
            // Timed out (or, never, the slots were dropped): dropping `waiting` leaves the line.
            _ => None,
        }
    }

    fn release(&self, priority: Priority) {
        let mut state = self.lock();
        state.give_back(priority);
        state.dispatch(self.background_max);
    }

    /// Slots free now (for tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.lock().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_a_waiting_decision_before_earlier_background_work() {
        let slots = CallSlots::new(1, 1);
        let held = slots.acquire(Priority::Decision, LONG).await.unwrap();
        let background = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Background, LONG).await }
        });
        tokio::task::yield_now().await;
        let decision = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Decision, LONG).await }
        });
        tokio::task::yield_now().await;
        drop(held);
        let decision = decision.await.unwrap().expect("the decision gets the slot");
        assert!(!background.is_finished());
        drop(decision);
        assert!(background.await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_holds_no_more_than_its_share_and_decisions_still_find_a_slot() {
        let slots = CallSlots::new(3, 2);
        let _a = slots.acquire(Priority::Background, LONG).await.unwrap();
        let _b = slots.acquire(Priority::Background, LONG).await.unwrap();
        assert!(slots
            .acquire(Priority::Background, Duration::from_millis(10))
            .await
            .is_none());
        assert!(slots
            .acquire(Priority::Decision, Duration::from_millis(10))
            .await
            .is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_its_bound_gets_no_slot_and_leaves_the_line() {
        let slots = CallSlots::new(1, 1);
        let held = slots.acquire(Priority::Decision, LONG).await.unwrap();
        assert!(slots
            .acquire(Priority::Decision, Duration::from_secs(1))
            .await
            .is_none());
        drop(held);
        assert_eq!(slots.free(), 1, "no slot is handed to a caller that left");
        let again = slots.acquire(Priority::Decision, Duration::ZERO).await;
        assert!(again.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_dropped_after_its_slot_was_handed_over_gives_it_back() {
        let slots = CallSlots::new(1, 1);
        let held = slots.acquire(Priority::Decision, LONG).await.unwrap();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Priority::Decision, LONG).await }
        });
        tokio::task::yield_now().await;
        // The slot is handed over, and the waiter's task is cancelled before it runs again.
        drop(held);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(slots.free(), 1);
    }
}
