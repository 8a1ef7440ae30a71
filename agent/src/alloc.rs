//! The global allocator. Every event allocates a few short-lived strings on its way
//! to the sinks; with glibc's allocator malloc/realloc/free were a third of the
//! agent's CPU in an exec storm (perf), with mimalloc a small fraction.
//!
//! mimalloc's defaults favour speed over footprint (arenas committed eagerly, freed
//! memory returned after a delay); a resident agent wants the footprint: measured in
//! an exec storm, peak RSS 110 MiB with the defaults, 61 MiB with the two options
//! below, at the same CPU (of which ~32 MiB are the mapped ring buffers).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Indices of `mi_option_e` in mimalloc's header (the same in v2 and v3) (libmimalloc-sys does not name
// these two). Each is set only if it still holds its documented default, so a
// renumbering in a future version cannot silently set some other option.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const ARENA_EAGER_COMMIT_DEFAULTS: &[i64] = &[2];
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// 10 ms in mimalloc v2, 1 s in v3 (the crate's default).
const PURGE_DELAY_DEFAULTS: &[i64] = &[10, 1000];

/// The options must be in place before mimalloc reserves its first arena, which it
/// does in its own constructor (`constructor(101)`, the earliest user priority): so
/// this runs as an ELF constructor one priority earlier. Setting an option is a plain
/// store into mimalloc's option table, valid before its initialisation, and an option
/// set from `MIMALLOC_*` in the environment is left as the operator chose.
#[used]
#[unsafe(link_section = ".init_array.00100")]
static TUNE_BEFORE_MIMALLOC_INIT: extern "C" fn() = tune_for_footprint;

extern "C" fn tune_for_footprint() {
    // SAFETY: plain option getters/setters of the allocator, no memory involved.
    unsafe {
        for (option, defaults, value) in [
            (ARENA_EAGER_COMMIT, ARENA_EAGER_COMMIT_DEFAULTS, 0),
            (PURGE_DELAY, PURGE_DELAY_DEFAULTS, 0),
        ] {
            if defaults.contains(&(libmimalloc_sys::mi_option_get(option) as i64)) {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}
