//! Metric ids, defined once per VM. Defining a metric is a host call that
//! builds a stat name; a filter that counts on every request remembers the
//! id instead, keyed by whatever it already has at hand.

use crate::host::{Host, MetricType};
use std::cell::RefCell;

/// Metric ids by key, defined on first use.
#[derive(Debug, Default)]
pub struct MetricIds {
    // Sorted by key, searched by bisection: a map type would add its own
    // code to every module for what is a small, mostly-read table.
    ids: RefCell<Vec<(String, u32)>>,
}

impl MetricIds {
    /// The id of the metric named `name`, defining it on first use; `None`
    /// if the host refuses.
    pub fn id(&self, host: &dyn Host, kind: MetricType, name: &str) -> Option<u32> {
        self.id_with(host, kind, name, || name.to_string())
    }

    /// The id remembered under `key`; on first use, the metric `name()` is
    /// defined. Lets a caller key by a short name and build the full stat
    /// name only once.
    pub fn id_with(
        &self,
        host: &dyn Host,
        kind: MetricType,
        key: &str,
        name: impl FnOnce() -> String,
    ) -> Option<u32> {
        let at = match self.find(key) {
            Ok(id) => return Some(id),
            Err(at) => at,
        };
        let id = host.define_metric(kind, &name()).ok()?;
        self.ids.borrow_mut().insert(at, (key.to_string(), id));
        Some(id)
    }

    /// Adds `by` to the counter remembered under `key` (defined as `name()`
    /// on first use). A host that refuses is ignored: a lost count never
    /// fails a request.
    pub fn count(&self, host: &dyn Host, key: &str, name: impl FnOnce() -> String, by: i64) {
        if let Some(id) = self.id_with(host, MetricType::Counter, key, name) {
            let _ = host.increment_metric(id, by);
        }
    }

    /// The id under `key`, or where to insert it.
    fn find(&self, key: &str) -> Result<u32, usize> {
        let ids = self.ids.borrow();
        ids.binary_search_by(|(k, _)| k.as_str().cmp(key))
            .map(|i| ids[i].1)
    }

    /// How many metrics are remembered.
    pub fn len(&self) -> usize {
        self.ids.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeHost;

    #[test]
    fn each_metric_is_defined_once() {
        let host = FakeHost::new();
        let ids = MetricIds::default();
        let a = ids.id(&host, MetricType::Counter, "b.total");
        let b = ids.id(&host, MetricType::Counter, "a.total");
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(ids.id(&host, MetricType::Counter, "b.total"), a);
        ids.count(&host, "a.total", || unreachable!("defined already"), 2);
        assert_eq!(ids.len(), 2);
        let c = ids.id_with(&host, MetricType::Counter, "c", || "prefix.c".into());
        assert_eq!(ids.id(&host, MetricType::Counter, "c"), c);
        assert_eq!(ids.len(), 3);
    }
}
