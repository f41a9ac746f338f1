//! Serialization of a manager's state (placeholder replaced below).
/// The format version of `serialize_memory_state` buffers.
pub const STATE_FORMAT_VERSION: u32 = 1;
