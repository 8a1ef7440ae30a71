//! Empty on purpose: the agent's build script depends on this package so that cargo
//! rebuilds the agent whenever the kernel programs (the `mcpwatch` bin) change.
#![no_std]
