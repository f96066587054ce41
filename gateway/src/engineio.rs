//! engineio (being written)
