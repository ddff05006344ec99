//! Per-invocation resource limits and their defaults.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Hard limits for one invocation of a function.
///
/// Every field has a sane default, so callers only set what they change:
/// `Limits { cpu_ms: 10, ..Limits::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Maximum V8 heap plus ArrayBuffer memory, in MiB.
    pub memory_mb: u32,
    /// CPU time the function may spend running JavaScript, measured on the
    /// executing thread's CPU clock, in milliseconds.
    pub cpu_ms: u32,
    /// Wall-clock time for the whole invocation, including awaited I/O and
    /// timers, in milliseconds.
    pub timeout_ms: u32,
    /// Outbound `fetch` calls one invocation may make.
    pub max_subrequests: u32,
    /// Response bytes all of one invocation's `fetch` calls may read, in MiB.
    pub max_subrequest_mb: u32,
    /// Time a `fetch` may take until its response headers, in milliseconds.
    pub subrequest_timeout_ms: u32,
    /// WebSocket connections the function may hold open on one node (0:
    /// it accepts none).
    pub websocket_connections: u32,
    /// Largest WebSocket message either side may send, in KiB.
    pub websocket_message_kb: u32,
    /// Seconds a WebSocket connection may pass with no message either way
    /// before the node closes it.
    pub websocket_idle_s: u32,
    /// Seconds a WebSocket connection may stay open at all.
    pub websocket_lifetime_s: u32,
}

impl Limits {
    /// Smallest accepted memory limit in MiB: below this V8 cannot even boot.
    pub const MIN_MEMORY_MB: u32 = 8;
    /// Largest accepted memory limit in MiB.
    pub const MAX_MEMORY_MB: u32 = 4096;
    /// Largest accepted CPU limit in milliseconds (5 minutes).
    pub const MAX_CPU_MS: u32 = 300_000;
    /// Largest accepted wall-clock limit in milliseconds (15 minutes).
    pub const MAX_TIMEOUT_MS: u32 = 900_000;
    /// Most subrequests one invocation may be allowed.
    pub const MAX_SUBREQUESTS: u32 = 10_000;
    /// Most fetched MiB one invocation may be allowed.
    pub const MAX_SUBREQUEST_MB: u32 = 1024;
    /// Most WebSocket connections one function may be allowed per node.
    pub const MAX_WEBSOCKET_CONNECTIONS: u32 = 100_000;
    /// Largest WebSocket message limit, in KiB (32 MiB).
    pub const MAX_WEBSOCKET_MESSAGE_KB: u32 = 32 * 1024;
    /// Longest idle time and lifetime of a WebSocket connection (7 days).
    pub const MAX_WEBSOCKET_SECONDS: u32 = 7 * 24 * 3600;

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }

    /// The CPU limit as a [`Duration`].
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms as u64)
    }

    /// The wall-clock limit as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms as u64)
    }

    /// The WebSocket message limit in bytes.
    pub fn websocket_message_bytes(&self) -> usize {
        self.websocket_message_kb as usize * 1024
    }

    /// Checks that every limit is within the accepted range.
    pub fn validate(&self) -> Result<(), String> {
        if !(Self::MIN_MEMORY_MB..=Self::MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(format!(
                "memory_mb must be between {} and {}, got {}",
                Self::MIN_MEMORY_MB,
                Self::MAX_MEMORY_MB,
                self.memory_mb
            ));
        }
        let ranges = [
            ("cpu_ms", self.cpu_ms, 1, Self::MAX_CPU_MS),
            ("timeout_ms", self.timeout_ms, 1, Self::MAX_TIMEOUT_MS),
            (
                "subrequest_timeout_ms",
                self.subrequest_timeout_ms,
                1,
                Self::MAX_TIMEOUT_MS,
            ),
            (
                "max_subrequests",
                self.max_subrequests,
                0,
                Self::MAX_SUBREQUESTS,
            ),
            (
                "max_subrequest_mb",
                self.max_subrequest_mb,
                0,
                Self::MAX_SUBREQUEST_MB,
            ),
            (
                "websocket_connections",
                self.websocket_connections,
                0,
                Self::MAX_WEBSOCKET_CONNECTIONS,
            ),
            (
                "websocket_message_kb",
                self.websocket_message_kb,
                1,
                Self::MAX_WEBSOCKET_MESSAGE_KB,
            ),
            (
                "websocket_idle_s",
                self.websocket_idle_s,
                1,
                Self::MAX_WEBSOCKET_SECONDS,
            ),
            (
                "websocket_lifetime_s",
                self.websocket_lifetime_s,
                1,
                Self::MAX_WEBSOCKET_SECONDS,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "{name} must be between {min} and {max}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            cpu_ms: 50,
            timeout_ms: 30_000,
            max_subrequests: 50,
            max_subrequest_mb: 32,
            subrequest_timeout_ms: 30_000,
            websocket_connections: 1000,
            // As in Workers: 1 MiB messages.
            websocket_message_kb: 1024,
            websocket_idle_s: 300,
            websocket_lifetime_s: 4 * 3600,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let limits = Limits::default();
        assert_eq!(limits.memory_bytes(), 128 << 20);
        assert_eq!(limits.cpu(), Duration::from_millis(50));
        assert!(limits.validate().is_ok());
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        let tiny = Limits {
            memory_mb: 1,
            ..Limits::default()
        };
        assert!(tiny.validate().unwrap_err().contains("memory_mb"));
        let no_cpu = Limits {
            cpu_ms: 0,
            ..Limits::default()
        };
        assert!(no_cpu.validate().unwrap_err().contains("cpu_ms"));
        let endless = Limits {
            timeout_ms: u32::MAX,
            ..Limits::default()
        };
        assert!(endless.validate().unwrap_err().contains("timeout_ms"));
        let greedy = Limits {
            cpu_ms: 3_600_000,
            ..Limits::default()
        };
        assert!(greedy.validate().unwrap_err().contains("cpu_ms"));
    }

    #[test]
    fn partial_json_takes_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"cpu_ms": 5}"#).unwrap();
        assert_eq!(limits.cpu_ms, 5);
        assert_eq!(limits.memory_mb, 128);
        assert!(serde_json::from_str::<Limits>(r#"{"cpu_msec": 5}"#).is_err());
    }
}
