//! One module per steering mode.

mod native;
mod vip;
