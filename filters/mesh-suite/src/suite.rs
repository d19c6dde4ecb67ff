//! The suite as one [`Filter`]: the stages run in the order of separate
//! filters in a chain (JWT, rate limit, canary, telemetry), with what Envoy
//! does between filters done here:
//!
//! - **Request headers** go to each stage in turn. A stage that pauses (the
//!   JWT filter waiting for its JWKS) holds the rest; when it resumes, the
//!   remaining stages run right away, in the same wake.
//! - **A local reply** (401, 403, 429) ends the pass: later stages never see
//!   the request or response headers, only `on_log`, as Envoy does with
//!   separate filters.
//! - **Response headers** go to the stages that passed the request on, in
//!   reverse, as Envoy's encoder chain runs.
//! - **`on_log`** goes to every stage in order; telemetry, last, reads the
//!   final request headers, so it sees the canary's decision.
//! - **Ticks** run at the shortest stage period; each stage's `on_tick` runs
//!   when its own period has passed. **HTTP call answers** go back to the
//!   stage that made the call.

use crate::config::{self, under};
use crate::watch::{RequestCache, Watch};
use kit::{Action, ConfigError, Filter, Host, HttpCallResponse, HttpFilter, Wake};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// A configured filter, whatever its type.
pub(crate) trait Stage {
    fn new_http(&self) -> Box<dyn HttpFilter>;
    fn tick_period(&self) -> Option<Duration>;
    fn on_tick(&self, host: &dyn Host);
    fn on_http_call_response(
        &self,
        host: &dyn Host,
        token: u32,
        response: Option<HttpCallResponse>,
    );
}

struct Of<F: Filter>(Rc<F>);

/// A configured stage with its filter's name.
type Named = (&'static str, Box<dyn Stage>);

impl<F: Filter> Stage for Of<F>
where
    F::Http: 'static,
{
    fn new_http(&self) -> Box<dyn HttpFilter> {
        Box::new(self.0.new_http())
    }
    fn tick_period(&self) -> Option<Duration> {
        self.0.tick_period()
    }
    fn on_tick(&self, host: &dyn Host) {
        self.0.on_tick(host)
    }
    fn on_http_call_response(
        &self,
        host: &dyn Host,
        token: u32,
        response: Option<HttpCallResponse>,
    ) {
        self.0.on_http_call_response(host, token, response)
    }
}

/// Configures filter `F` as a stage (see [`crate::registry`]).
pub(crate) fn stage<F: Filter>(bytes: &[u8], host: &dyn Host) -> Result<Box<dyn Stage>, ConfigError>
where
    F::Http: 'static,
{
    Ok(Box::new(Of(Rc::new(F::configure(Some(bytes), host)?))))
}

pub struct Suite {
    stages: Vec<Named>,
    /// When each stage last ticked.
    ticked: RefCell<Vec<Option<SystemTime>>>,
    /// HTTP call token → the stage that made the call.
    calls: RefCell<HashMap<u32, usize>>,
}

impl Suite {
    /// The names of the configured stages, in order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|(n, _)| *n).collect()
    }

    fn note_calls(&self, watch: &Watch, stage: usize) {
        let calls = watch.take_calls();
        if !calls.is_empty() {
            let mut map = self.calls.borrow_mut();
            for token in calls {
                map.insert(token, stage);
            }
        }
    }
}

impl Filter for Suite {
    const NAME: &'static str = "mesh-suite";
    type Http = SuiteHttp;

    fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError> {
        let mut stages: Vec<Named> = Vec::new();
        for (filter, stage, bytes) in config::split(config)? {
            let built = (stage.build)(&bytes, host).map_err(|e| under(stage.key, e))?;
            stages.push((filter.crate_name, built));
        }
        let n = stages.len();
        Ok(Suite {
            stages,
            ticked: RefCell::new(vec![None; n]),
            calls: RefCell::new(HashMap::new()),
        })
    }

    fn new_http(self: &Rc<Self>) -> SuiteHttp {
        SuiteHttp {
            suite: Rc::clone(self),
            https: self.stages.iter().map(|(_, s)| s.new_http()).collect(),
            end_of_stream: false,
            reached: 0,
            paused_at: None,
            replied_at: None,
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        self.stages
            .iter()
            .filter_map(|(_, s)| s.tick_period())
            .min()
    }

    fn on_tick(self: &Rc<Self>, host: &dyn Host) {
        let now = host.now().ok();
        for (i, (_, s)) in self.stages.iter().enumerate() {
            let Some(period) = s.tick_period() else {
                continue;
            };
            let due = {
                let ticked = self.ticked.borrow();
                match (ticked.get(i).copied().flatten(), now) {
                    // A tenth of slack: ticks do not land to the millisecond.
                    (Some(last), Some(now)) => now
                        .duration_since(last)
                        .map_or(true, |d| d + period / 10 >= period),
                    _ => true,
                }
            };
            if due {
                if let Some(t) = self.ticked.borrow_mut().get_mut(i) {
                    *t = now;
                }
                let watch = Watch::new(host);
                s.on_tick(&watch);
                self.note_calls(&watch, i);
            }
        }
    }

    fn on_http_call_response(
        self: &Rc<Self>,
        host: &dyn Host,
        token: u32,
        response: Option<HttpCallResponse>,
    ) {
        let owner = self.calls.borrow_mut().remove(&token);
        if let Some(i) = owner
            && let Some((_, s)) = self.stages.get(i)
        {
            let watch = Watch::new(host);
            s.on_http_call_response(&watch, token, response);
            self.note_calls(&watch, i);
        }
    }
}

/// Where a pass over the request headers ended.
enum Step {
    /// Every stage let the request go on.
    Through,
    /// A stage paused it.
    Paused,
    /// A stage answered it.
    Replied,
}

pub struct SuiteHttp {
    suite: Rc<Suite>,
    https: Vec<Box<dyn HttpFilter>>,
    end_of_stream: bool,
    /// Stages that have seen the request headers.
    reached: usize,
    paused_at: Option<usize>,
    replied_at: Option<usize>,
}

impl SuiteHttp {
    /// Runs the request headers through the stages from `start` on.
    fn pass(&mut self, host: &dyn Host, start: usize) -> Step {
        let cache = RequestCache::default();
        for i in start..self.https.len() {
            let watch = Watch::with_cache(host, &cache);
            let action = match self.https.get_mut(i) {
                Some(h) => h.on_request_headers(&watch, self.end_of_stream),
                None => break,
            };
            self.suite.note_calls(&watch, i);
            self.reached = i + 1;
            if watch.replied() {
                self.replied_at = Some(i);
                return Step::Replied;
            }
            if action == Action::Pause {
                self.paused_at = Some(i);
                return Step::Paused;
            }
        }
        Step::Through
    }
}

impl HttpFilter for SuiteHttp {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        self.end_of_stream = end_of_stream;
        match self.pass(host, 0) {
            Step::Through => Action::Continue,
            Step::Paused | Step::Replied => Action::Pause,
        }
    }

    fn on_wake(&mut self, host: &dyn Host) -> Wake {
        let Some(i) = self.paused_at else {
            return Wake::Resume;
        };
        let watch = Watch::new(host);
        let wake = match self.https.get_mut(i) {
            Some(h) => h.on_wake(&watch),
            None => Wake::Resume,
        };
        self.suite.note_calls(&watch, i);
        if watch.replied() || wake == Wake::Done {
            self.paused_at = None;
            self.replied_at = Some(i);
            return Wake::Done;
        }
        match wake {
            Wake::Wait => Wake::Wait,
            _ => {
                self.paused_at = None;
                match self.pass(host, i + 1) {
                    Step::Through => Wake::Resume,
                    Step::Paused => Wake::Wait,
                    Step::Replied => Wake::Done,
                }
            }
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Action {
        // Stages that passed the request on; the one that answered it is
        // busy sending that answer.
        let upto = self
            .replied_at
            .unwrap_or(self.reached)
            .min(self.https.len());
        let mut result = Action::Continue;
        for h in self.https[..upto].iter_mut().rev() {
            if h.on_response_headers(host, end_of_stream) == Action::Pause {
                result = Action::Pause;
            }
        }
        result
    }

    fn on_log(&mut self, host: &dyn Host) {
        for h in &mut self.https {
            h.on_log(host);
        }
    }
}
