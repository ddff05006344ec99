//! One module per subcommand.

pub mod dev;
pub mod functions;
pub mod init;
pub mod invoke;
pub mod kv;
pub mod login;
pub mod logs;
pub mod secret;
pub mod serve;
pub mod status;
