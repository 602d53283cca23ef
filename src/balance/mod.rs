//! Server selection algorithms.
