//! handles (to be written).
