//! Routes the `log` facade to Envoy's log (`proxy_log`), and logs a panic's
//! message before the VM traps, so a trap is never silent.

#[cfg(target_os = "wasi")]
mod wasi {
    use crate::host::{Host, LogLevel};

    struct EnvoyLogger;

    static LOGGER: EnvoyLogger = EnvoyLogger;

    fn level_of(level: log::Level) -> LogLevel {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }

    fn write(level: LogLevel, message: &str) {
        // SAFETY: pointer and length come from one &str.
        unsafe { crate::abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    impl log::Log for EnvoyLogger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::max_level()
        }

        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                write(level_of(record.level()), &record.args().to_string());
            }
        }

        fn flush(&self) {}
    }

    pub fn init() {
        // Fails only when already set, which is fine.
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Info);
        std::panic::set_hook(Box::new(|info| {
            write(LogLevel::Critical, &format!("panic: {info}"));
        }));
    }

    /// Follows Envoy's level for this plugin, so disabled levels cost nothing.
    pub fn sync_level(host: &dyn Host) {
        if let Ok(level) = host.log_level() {
            log::set_max_level(match level {
                LogLevel::Trace => log::LevelFilter::Trace,
                LogLevel::Debug => log::LevelFilter::Debug,
                LogLevel::Info => log::LevelFilter::Info,
                LogLevel::Warn => log::LevelFilter::Warn,
                LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
            });
        }
    }
}

#[cfg(target_os = "wasi")]
pub use wasi::{init, sync_level};
