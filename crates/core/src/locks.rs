//! locks (to be written).
