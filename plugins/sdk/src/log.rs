//! Logging into the host's `tracing`, tagged with stage and plugin and
//! rate-limited by the host. Natively (unit tests) it prints to stderr.

pub use crate::bindings::transformer::sluice::plugin::log::Level;

pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::transformer::sluice::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

#[macro_export]
macro_rules! trace { ($($t:tt)*) => { $crate::log::log($crate::Level::Trace, &::std::format!($($t)*)) }; }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::Level::Debug, &::std::format!($($t)*)) }; }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::Level::Info, &::std::format!($($t)*)) }; }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::Level::Warn, &::std::format!($($t)*)) }; }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::Level::Error, &::std::format!($($t)*)) }; }
