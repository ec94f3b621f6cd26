//! One module per subcommand.

pub mod bench;
pub mod caption;
pub mod classify;
pub mod convert;
pub mod embed;
pub mod eval;
pub mod finetune;
pub mod index;
pub mod info;
pub mod launch;
pub mod parity;
pub mod plot;
pub mod probe;
pub mod quantize;
pub mod search;
pub mod serve;
pub mod tokenize;
pub mod train;
