//! One module per subcommand.

pub mod invoke;
