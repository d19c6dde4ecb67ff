//! The probe filter: repeats one host call `n` times per request, through
//! the kit's `Host` (exactly what the filters pay). The load benchmark's
//! `--probe` mode runs it once per operation, so that
//! `(cpu(op) - cpu(wasm-empty)) / n` is the cost of one call in Envoy 1.40
//! with V8. Measure, then change: this is where the filters' costs come from.

#[cfg(target_os = "wasi")]
mod probe {
    use kit::{Action, ConfigError, Filter, Host, HttpFilter, MapType, MetricType};
    use std::rc::Rc;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        op: String,
        n: u32,
    }

    pub struct Probe {
        op: String,
        n: u32,
        metric: u32,
    }

    impl Filter for Probe {
        const NAME: &'static str = "probe";
        type Http = ProbeHttp;

        fn configure(config: Option<&[u8]>, host: &dyn Host) -> Result<Self, ConfigError> {
            let c: Config = serde_json::from_slice(config.unwrap_or(b"{}"))
                .map_err(|e| ConfigError::new("", e.to_string()))?;
            let metric = host
                .define_metric(MetricType::Counter, "probe_total")
                .unwrap_or(0);
            if c.op == "shared_get" || c.op == "shared_cas" {
                let _ = host.set_shared_data("probe/key", &[0u8; 16], None);
            }
            Ok(Probe {
                op: c.op,
                n: c.n,
                metric,
            })
        }

        fn new_http(self: &Rc<Self>) -> ProbeHttp {
            ProbeHttp(Rc::clone(self))
        }
    }

    pub struct ProbeHttp(Rc<Probe>);

    impl ProbeHttp {
        fn run(&self, host: &dyn Host, phase: &str) {
            let p = &*self.0;
            let (phase_of_op, op) = p.op.split_once(':').unwrap_or(("request", &p.op));
            if phase_of_op != phase {
                return;
            }
            for _ in 0..p.n {
                match op {
                    "header_map" => drop(host.headers(MapType::RequestHeaders)),
                    "header_get" => drop(host.header(MapType::RequestHeaders, ":path")),
                    "header_missing" => drop(host.header(MapType::RequestHeaders, "x-absent")),
                    "header_set" => drop(host.set_header(MapType::RequestHeaders, "x-probe", b"1")),
                    "clear_route_cache" => drop(host.clear_route_cache()),
                    "property" => drop(host.property(&["request", "path"])),
                    "property_response_code" => drop(host.property(&["response", "code"])),
                    "property_duration" => drop(host.property(&["request", "duration"])),
                    "set_property" => drop(host.set_property(&["probe_decision"], b"allowed")),
                    "shared_get" => drop(host.shared_data("probe/key")),
                    "shared_cas" => {
                        if let Ok(Some(v)) = host.shared_data("probe/key") {
                            let _ = host.set_shared_data("probe/key", &v.value, Some(v.cas));
                        }
                    }
                    "metric_inc" => drop(host.increment_metric(p.metric, 1)),
                    "time" => drop(host.now()),
                    "log_level" => drop(host.log_level()),
                    _ => {}
                }
            }
        }
    }

    impl HttpFilter for ProbeHttp {
        fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
            self.run(host, "request");
            Action::Continue
        }

        fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
            self.run(host, "response");
            Action::Continue
        }

        fn on_log(&mut self, host: &dyn Host) {
            self.run(host, "log");
        }
    }

    kit::export_filter!(Probe);
}
