//! The aggregate contract: windowed aggregation where the host owns windows,
//! watermarks and state, and the plugin is pure (which is what makes state
//! checkpointable and hot swap safe).

use crate::instance::{self, with};
use crate::{Batch, Config, Extracted, Format, Group, Info, Window};

/// An aggregate plugin. Per input batch the host calls `extract` (key, event
/// time and value per record), groups the values by (window, key), and calls
/// `accumulate` once with every group and its prior state; when a window
/// closes it calls `finish` per key to get the output record.
pub trait Aggregate: Sized + 'static {
    const TAKES: Format;
    /// Format of `finish` output records (JSON documents).
    const EMITS: Format = Format::Json;
    /// Version of the state encoding; bump it when it changes and implement `migrate`.
    const STATE_VERSION: u32 = 0;

    fn init(config: Config) -> Result<Self, String>;
    fn extract(&mut self, input: Batch) -> Result<Extracted, String>;
    /// One new state per group, in the order of `groups`.
    fn accumulate(&mut self, groups: Vec<Group>) -> Result<Vec<Vec<u8>>, String>;
    /// The output record (one JSON document) of a closed window, or none.
    fn finish(&mut self, window: Window, key: Vec<u8>, state: Vec<u8>) -> Option<Vec<u8>>;
    /// Re-encodes state written under an older `STATE_VERSION`.
    fn migrate(&mut self, from_state_version: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
        if from_state_version == Self::STATE_VERSION {
            Ok(state)
        } else {
            Err(format!("cannot migrate state from version {from_state_version} to {}", Self::STATE_VERSION))
        }
    }
}

#[doc(hidden)]
pub fn __describe<T: Aggregate>(name: &str, version: &str) -> Info {
    instance::info(name, version, T::STATE_VERSION, T::TAKES, T::EMITS)
}

#[doc(hidden)]
pub fn __init<T: Aggregate>(config: String) -> Result<(), String> {
    instance::install(T::init(Config::new(config))?);
    Ok(())
}

#[doc(hidden)]
pub fn __extract<T: Aggregate>(input: Batch) -> Result<Extracted, String> {
    instance::check_format(&input, T::TAKES)?;
    with::<T, _>(|p| p.extract(input))
}

#[doc(hidden)]
pub fn __accumulate<T: Aggregate>(groups: Vec<Group>) -> Result<Vec<Vec<u8>>, String> {
    with::<T, _>(|p| p.accumulate(groups))
}

#[doc(hidden)]
pub fn __finish<T: Aggregate>(window: Window, key: Vec<u8>, state: Vec<u8>) -> Option<Vec<u8>> {
    with::<T, _>(|p| Ok(p.finish(window, key, state))).ok().flatten()
}

#[doc(hidden)]
pub fn __migrate<T: Aggregate>(from: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
    with::<T, _>(|p| p.migrate(from, state))
}

/// Exports an [`Aggregate`] implementation as the component's `aggregate`
/// interface (the `aggregator` world).
#[macro_export]
macro_rules! export_aggregate {
    ($ty:ty) => {
        const _: () = {
            struct __SluiceAggregate;
            impl $crate::bindings::aggregator::exports::sluice::plugin::aggregate::Guest for __SluiceAggregate {
                fn describe() -> $crate::Info {
                    $crate::aggregate::__describe::<$ty>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                }
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::aggregate::__init::<$ty>(config)
                }
                fn extract(input: $crate::Batch) -> ::std::result::Result<$crate::Extracted, ::std::string::String> {
                    $crate::aggregate::__extract::<$ty>(input)
                }
                fn accumulate(
                    groups: ::std::vec::Vec<$crate::Group>,
                ) -> ::std::result::Result<::std::vec::Vec<::std::vec::Vec<u8>>, ::std::string::String> {
                    $crate::aggregate::__accumulate::<$ty>(groups)
                }
                fn finish(
                    window: $crate::Window,
                    key: ::std::vec::Vec<u8>,
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::option::Option<::std::vec::Vec<u8>> {
                    $crate::aggregate::__finish::<$ty>(window, key, state)
                }
                fn migrate(
                    from_state_version: u32,
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::aggregate::__migrate::<$ty>(from_state_version, state)
                }
            }
            $crate::bindings::aggregator::__export_aggregator!(
                __SluiceAggregate with_types_in $crate::bindings::aggregator
            );
        };
    };
}
