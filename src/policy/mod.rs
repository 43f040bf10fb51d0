//! The buntime policy: what a sandbox may read, write, connect to and execute.
