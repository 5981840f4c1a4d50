//! The crate's one type-erased error: what hyper bodies and clients hand
//! back when the concrete error type does not matter to the caller, only
//! its message and `source()` chain. A leaf that imports nothing.

/// A boxed error that can cross threads, as hyper's body and client APIs
/// use it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
