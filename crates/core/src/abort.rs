//! abort (to be written).
