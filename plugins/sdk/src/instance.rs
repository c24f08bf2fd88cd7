//! The one plugin value of a component instance, shared by both worlds'
//! export glue (`transform`, `aggregate`).

use std::any::Any;
use std::cell::RefCell;

use crate::{Batch, Format, Info};

thread_local! {
    // Wasm guests are single-threaded; this is the plugin instance's one value.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// What `describe()` returns: crate name and version plus the plugin's constants.
pub(crate) fn info(name: &str, version: &str, state_version: u32, takes: Format, emits: Format) -> Info {
    Info { name: name.to_owned(), version: version.to_owned(), state_version, takes, emits }
}

/// Keeps the value `init` built.
pub(crate) fn install<T: 'static>(plugin: T) {
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(plugin)));
}

/// Runs `f` on the installed plugin; an error before a successful `init`.
pub(crate) fn with<T: 'static, R>(f: impl FnOnce(&mut T) -> Result<R, String>) -> Result<R, String> {
    INSTANCE.with(|i| {
        let mut guard = i.borrow_mut();
        let plugin = guard
            .as_mut()
            .and_then(|b| b.downcast_mut::<T>())
            .ok_or_else(|| "called before a successful init".to_owned())?;
        f(plugin)
    })
}

/// The host converts to the declared format; anything else is a host bug worth naming.
pub(crate) fn check_format(input: &Batch, takes: Format) -> Result<(), String> {
    if input.format != takes {
        return Err(format!("this plugin takes {takes:?} batches, got {:?}", input.format));
    }
    Ok(())
}
