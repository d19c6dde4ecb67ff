//! The thin layer between Envoy and [`Router::decide`]: read the request
//! headers once, write the routing header, re-select the route, and pin the
//! client with a cookie on the response.

use crate::route::Router;
use kit::{Action, ConfigError, Filter, Host, HttpFilter, MapType};
use std::rc::Rc;

pub struct CanaryRouter {
    pub router: Router,
}

impl Filter for CanaryRouter {
    const NAME: &'static str = "canary-router";
    type Http = CanaryHttp;

    fn configure(config: Option<&[u8]>, _host: &dyn Host) -> Result<Self, ConfigError> {
        Ok(CanaryRouter {
            router: crate::config::compile_json(config)?,
        })
    }

    fn new_http(self: &Rc<Self>) -> CanaryHttp {
        CanaryHttp {
            filter: Rc::clone(self),
            set_cookie: None,
        }
    }
}

pub struct CanaryHttp {
    filter: Rc<CanaryRouter>,
    /// Added in the response phase: Envoy refuses response headers earlier.
    set_cookie: Option<String>,
}

impl HttpFilter for CanaryHttp {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        let router = &self.filter.router;
        let name = router.routing_header.as_str();
        let headers = match host.headers(MapType::RequestHeaders) {
            Ok(h) => h,
            Err(e) => {
                // Without the headers there is no decision, but a client-sent
                // routing header must still not pass.
                log::warn!("cannot read request headers: {e}");
                if host.remove_header(MapType::RequestHeaders, name).is_ok() {
                    let _ = host.clear_route_cache();
                }
                return Action::Continue;
            }
        };
        let decision = router.decide(&headers, || host.random_u64());
        let mut current = headers.get_all(name);
        let unchanged = match (decision.version, current.next(), current.next()) {
            (Some(v), Some(first), None) => first == v.as_bytes(),
            (None, None, _) => true,
            _ => false,
        };
        if !unchanged {
            let result = match decision.version {
                Some(v) => host.set_header(MapType::RequestHeaders, name, v.as_bytes()),
                None => host.remove_header(MapType::RequestHeaders, name),
            };
            if let Err(e) = result.and_then(|()| host.clear_route_cache()) {
                log::warn!("cannot update {name}: {e}");
            }
        }
        log::debug!("{name}={:?} ({:?})", decision.version, decision.reason);
        self.set_cookie = decision.set_cookie;
        Action::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take()
            && let Err(e) =
                host.add_header(MapType::ResponseHeaders, "set-cookie", cookie.as_bytes())
        {
            log::warn!("cannot set the pin cookie: {e}");
        }
        Action::Continue
    }
}
