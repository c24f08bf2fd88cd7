//! The transform contract (validate, enrich, filter, explode): batch in, batch out.

use crate::{instance, Batch, Config, Format, Info, Transformed};

/// A transform plugin. The host creates one instance per stage, calls
/// [`Transform::init`] once with the stage's config, then
/// [`Transform::process`] per batch.
///
/// Refuse bad records by adding a [`crate::Rejection`] (they go to the
/// dead-letter queue with your code and message); return `Err` only when the
/// whole batch cannot be processed. A panic traps the instance: the host
/// retries the batch on a fresh instance, then quarantines its records.
pub trait Transform: Sized + 'static {
    /// The batch format this plugin reads; the host converts if the previous stage emits the other.
    const TAKES: Format;
    /// The batch format this plugin writes.
    const EMITS: Format;
    /// Version of the state encoding; 0 for stateless plugins.
    const STATE_VERSION: u32 = 0;

    fn init(config: Config) -> Result<Self, String>;
    fn process(&mut self, input: Batch) -> Result<Transformed, String>;
}

#[doc(hidden)]
pub fn __describe<T: Transform>(name: &str, version: &str) -> Info {
    instance::info(name, version, T::STATE_VERSION, T::TAKES, T::EMITS)
}

#[doc(hidden)]
pub fn __init<T: Transform>(config: String) -> Result<(), String> {
    instance::install(T::init(Config::new(config))?);
    Ok(())
}

#[doc(hidden)]
pub fn __process<T: Transform>(input: Batch) -> Result<Transformed, String> {
    instance::check_format(&input, T::TAKES)?;
    instance::with::<T, _>(|p| p.process(input))
}

/// Exports a [`Transform`] implementation as the component's `transform`
/// interface. Name and version in `describe()` come from the plugin's Cargo.toml.
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceTransform;
            impl $crate::bindings::transformer::exports::sluice::plugin::transform::Guest for __SluiceTransform {
                fn describe() -> $crate::Info {
                    $crate::transform::__describe::<$ty>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                }
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::transform::__init::<$ty>(config)
                }
                fn process(input: $crate::Batch) -> ::std::result::Result<$crate::Transformed, ::std::string::String> {
                    $crate::transform::__process::<$ty>(input)
                }
            }
            $crate::bindings::transformer::__export_transformer!(
                __SluiceTransform with_types_in $crate::bindings::transformer
            );
        };
    };
}
