//! Errors of the registry, each with a stable code.

/// What can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The node key is missing, unreadable or not this database's.
    #[error("node key: {0}")]
    Key(String),
    /// A blocking task failed.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The shared store (NATS JetStream) failed or could not be reached.
    #[error("shared store: {0}")]
    Shared(String),
}

impl StoreError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "invalid_request",
            Self::Database(_) | Self::Corrupt(_) | Self::Key(_) | Self::Task(_) => "internal",
            Self::Shared(_) => "unavailable",
        }
    }
}

/// Results of the registry.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
