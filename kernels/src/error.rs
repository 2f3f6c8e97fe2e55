//! Errors of the GPU runtime and the kernel launchers.

/// Everything that can go wrong between choosing an adapter and reading a result back.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No adapter matched; the message says how to get one.
    #[error("no GPU adapter found{filter}: {hint}")]
    NoAdapter {
        /// What the search was restricted to (backend, name), if anything.
        filter: String,
        /// How to get an adapter on this machine.
        hint: String,
    },
    /// An environment setting had a value Tessera does not know.
    #[error("{var}={value} is not understood: {expected}")]
    BadEnv {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
        /// The values that are understood.
        expected: &'static str,
    },
    /// The adapter refused to open a device.
    #[error("the adapter '{adapter}' refused to open a device: {reason}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// The driver's reason.
        reason: String,
    },
    /// Operand shapes that do not fit the operation.
    #[error("shape error in {op}: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// The work exceeds one of the adapter's limits and cannot be split.
    #[error("{op} exceeds the adapter's {limit}: needs {needed}, the adapter allows {allowed}")]
    Limit {
        /// The operation.
        op: &'static str,
        /// Which limit.
        limit: &'static str,
        /// What the operation needs.
        needed: u64,
        /// What the adapter allows.
        allowed: u64,
    },
    /// A feature the operation needs is missing on this adapter.
    #[error("{op} needs the adapter feature {feature}, which '{adapter}' does not have; use f32")]
    MissingFeature {
        /// The operation.
        op: &'static str,
        /// The wgpu feature.
        feature: &'static str,
        /// Adapter name.
        adapter: String,
    },
    /// A shader failed to compile or a pipeline failed to build.
    #[error("shader '{shader}' failed to build: {reason}")]
    Shader {
        /// Shader key.
        shader: String,
        /// The compiler's message.
        reason: String,
    },
    /// The GPU reported an error while running recorded work.
    #[error("GPU error: {0}")]
    Gpu(String),
}

/// Result with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
