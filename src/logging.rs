//! Logging set-up shared by the binaries.
