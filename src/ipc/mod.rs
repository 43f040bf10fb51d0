//! IPC between a container's workers and its supervisor (see docs/ipc.md).
