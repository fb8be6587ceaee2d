//! What can go wrong in the store, by kind, so that the API answers with the status the kind
//! means (Tempo's: 400, 404, 503, 500) instead of turning every failure into a 500.
//!
//! The engine's public methods keep returning `anyhow::Result`; their errors are a
//! [`StoreError`] (find it with [`StoreError::of`]).

/// A failure of the store, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is wrong (a tenant id that cannot name a path, bounds out of order):
    /// asking again the same way fails again.
    #[error("{0}")]
    InvalidRequest(String),
    /// The tenant has no data: nothing in the head, nothing in blocks.
    #[error("tenant {0:?} has no traces (check the X-Scope-OrgID header)")]
    UnknownTenant(String),
    /// The store cannot serve now but may shortly (shutting down, blocks replaced faster than a
    /// query could read them): asking again later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// A block listed in storage lost its files: compacted or expired by another process after
    /// this one listed it. Queries take the block list again and retry.
    #[error("block {tenant}/{block_id} is no longer in storage: {source}")]
    BlockGone {
        tenant: String,
        block_id: String,
        #[source]
        source: object_store::Error,
    },
    /// A real fault (storage unreachable or corrupt, a bug): the message says which.
    #[error(transparent)]
    Fault(#[from] anyhow::Error),
}

impl StoreError {
    /// The store error inside an error returned by the engine's public methods, if any.
    pub fn of(err: &anyhow::Error) -> Option<&StoreError> {
        err.downcast_ref::<StoreError>()
    }
}
