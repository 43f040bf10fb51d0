//! The runc-compatible runtime on top of libcontainer.
