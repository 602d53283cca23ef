//! Request routing by host and path prefix.
