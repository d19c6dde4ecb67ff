//! Requests paused by a filter, woken after every tick and HTTP call
//! response. proxy-wasm delivers ticks and call responses to the root
//! context only, so the root keeps the paused requests and switches to each
//! one's context to wake it.

use crate::filter::{HttpFilter, Wake};
use crate::host::Host;
use std::cell::RefCell;
use std::rc::Rc;

pub struct PausedRequests<T> {
    entries: RefCell<Vec<(u32, Rc<RefCell<T>>)>>,
}

impl<T> Default for PausedRequests<T> {
    fn default() -> Self {
        PausedRequests {
            entries: RefCell::new(Vec::new()),
        }
    }
}

impl<T: HttpFilter> PausedRequests<T> {
    pub fn add(&self, context_id: u32, http: Rc<RefCell<T>>) {
        self.entries.borrow_mut().push((context_id, http));
    }

    /// Forgets a request (its context is gone).
    pub fn remove(&self, context_id: u32) {
        self.entries
            .borrow_mut()
            .retain(|(id, _)| *id != context_id);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every paused request once.
    pub fn wake_all(&self, host: &dyn Host) {
        // Taken out first: a wake may send a local reply, and Envoy may call
        // back into this module (the response path) before it returns.
        let entries = std::mem::take(&mut *self.entries.borrow_mut());
        let mut waiting = Vec::new();
        for (id, http) in entries {
            // A context Envoy no longer knows has ended: drop it.
            if host.set_effective_context(id).is_err() {
                continue;
            }
            let wake = match http.try_borrow_mut() {
                Ok(mut h) => h.on_wake(host),
                Err(_) => Wake::Wait,
            };
            match wake {
                Wake::Resume => {
                    if let Err(e) = host.resume_request() {
                        log::warn!("cannot resume request {id}: {e}");
                    }
                }
                Wake::Wait => waiting.push((id, http)),
                Wake::Done => {}
            }
        }
        self.entries.borrow_mut().extend(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeHost;

    struct Waiter {
        wakes: u32,
        then: Wake,
        after: u32,
    }

    impl HttpFilter for Waiter {
        fn on_wake(&mut self, _host: &dyn Host) -> Wake {
            self.wakes += 1;
            if self.wakes >= self.after {
                self.then
            } else {
                Wake::Wait
            }
        }
    }

    #[test]
    fn wakes_until_resumed_or_done() {
        let host = FakeHost::new();
        let paused = PausedRequests::default();
        let a = Rc::new(RefCell::new(Waiter {
            wakes: 0,
            then: Wake::Resume,
            after: 2,
        }));
        let b = Rc::new(RefCell::new(Waiter {
            wakes: 0,
            then: Wake::Done,
            after: 1,
        }));
        paused.add(7, a.clone());
        paused.add(8, b.clone());
        paused.wake_all(&host);
        assert_eq!(paused.len(), 1);
        assert!(host.resumed.borrow().is_empty());
        paused.wake_all(&host);
        assert!(paused.is_empty());
        assert_eq!(*host.resumed.borrow(), vec![7]);
        assert_eq!(a.borrow().wakes, 2);
        assert_eq!(b.borrow().wakes, 1);
    }

    #[test]
    fn a_removed_or_unknown_context_is_dropped() {
        let host = FakeHost::new();
        let paused = PausedRequests::default();
        let w = || {
            Rc::new(RefCell::new(Waiter {
                wakes: 0,
                then: Wake::Resume,
                after: 1,
            }))
        };
        paused.add(1, w());
        paused.add(2, w());
        paused.remove(1);
        host.end_context(2);
        paused.wake_all(&host);
        assert!(paused.is_empty());
        assert!(host.resumed.borrow().is_empty());
    }
}
