//! Pipeline files: TOML → `${VAR}` interpolation → typed model → graph checks.
//! Every error carries file, line and key path (`error::ConfigError`).
pub mod error;
pub mod interp;
pub mod load;
pub mod locate;
pub mod model;
pub mod outputs;
pub mod units;
pub mod window;

pub use error::{ConfigError, ConfigErrors};
pub use load::{load, NodeKind, Pipeline};
pub use model::*;
