//! One module per steering mode.

mod native;
