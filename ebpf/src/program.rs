//! How every tracepoint program is declared.

/// Declares a tracepoint program that returns at once in the bench's floor mode
/// (`maps::floor`), so each program's body holds only its own logic:
///
/// ```ignore
/// tracepoint! {
///     /// Doc comment.
///     fn sys_enter_listen(ctx) {
///         // … uses `ctx: TracePointContext` …
///         0
///     }
/// }
/// ```
///
/// The program's name (and so its section and the name the loader attaches) is the
/// function's.
macro_rules! tracepoint {
    ($(#[$attr:meta])* fn $name:ident($ctx:ident) $body:block) => {
        $(#[$attr])*
        #[aya_ebpf::macros::tracepoint]
        pub fn $name($ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            if crate::maps::floor() {
                return 0;
            }
            $body
        }
    };
}
