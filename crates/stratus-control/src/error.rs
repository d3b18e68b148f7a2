//! Errors of the control plane, in the terms a user of the API or CLI acts on.

use stratus_runtime::RuntimeError;
use stratus_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong (name, size, field).
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Valid, but not in the object's current state.
    #[error("{0}")]
    WrongState(String),
    /// No node has room for it (`placement`).
    #[error("{0}")]
    NoCapacity(String),
    /// The database server could not do it (failed start, SQL error).
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// A stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Invalid(_) => "invalid_argument",
            ControlError::NotFound(_) => "not_found",
            ControlError::AlreadyExists(_) => "already_exists",
            ControlError::WrongState(_) => "failed_precondition",
            ControlError::NoCapacity(_) => "resource_exhausted",
            ControlError::Runtime(_) => "unavailable",
            ControlError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => ControlError::AlreadyExists(what),
            StoreError::NotFound(what) => ControlError::NotFound(what),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

impl From<RuntimeError> for ControlError {
    fn from(e: RuntimeError) -> Self {
        ControlError::Runtime(e.to_string())
    }
}

impl From<stratus_core::NameError> for ControlError {
    fn from(e: stratus_core::NameError) -> Self {
        ControlError::Invalid(e.to_string())
    }
}

impl From<stratus_core::SpecError> for ControlError {
    fn from(e: stratus_core::SpecError) -> Self {
        ControlError::Invalid(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ControlError>;
