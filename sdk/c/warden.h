/*
 * warden.h — the "warden" imports (DESIGN §4, docs/guest-interface.md) for core-module guests
 * written in C, built with clang for wasm32-wasi:
 *
 *     clang --target=wasm32-wasi -mexec-model=reactor -I sdk/c guest.c -o guest.wasm
 *
 * Import only what you call: a function declared here but never used is not imported. Every
 * string is a (pointer, length) pair in the module's exported `memory`, which clang exports by
 * default. Results below zero are `warden_status` codes; docs/guest-guide.md says what each
 * import guarantees and where that ends.
 *
 * Header-only, no libc needed.
 */
#ifndef WARDEN_H
#define WARDEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes of the "warden" imports: negative results. */
typedef enum warden_status {
    WARDEN_OK = 0,
    WARDEN_TIMEOUT = -1,            /* a wait's timeout passed */
    WARDEN_DEADLOCK_VICTIM = -2,    /* your wait closed a deadlock: release what you hold, return */
    WARDEN_ABORTED = -3,            /* the wait was aborted */
    WARDEN_POISONED = -4,           /* lock acquired, but its last owner did not release it: repair */
    WARDEN_NOT_PERMITTED = -5,      /* the domain's grant does not allow it */
    WARDEN_HELD = -6,               /* already held (acquire) / not held (release) */
    WARDEN_INSUFFICIENT_MEMORY = -7,/* the memory gate refused the reservation */
    WARDEN_BAD_ARGUMENT = -8,       /* a bad name, token, handle or length */
    WARDEN_DOMAIN_UNLOADED = -9,    /* domain_call: the callee is unloaded, or was during the call */
    WARDEN_CALLEE_FAILED = -10      /* domain_call: the callee's call trapped, ran out of memory... */
} warden_status;

/* Log levels for warden_log: a convention, not interpreted by Warden (the `guest_log`
 * event carries the number as given). */
enum { WARDEN_LOG_ERROR = 1, WARDEN_LOG_WARN = 2, WARDEN_LOG_INFO = 3, WARDEN_LOG_DEBUG = 4 };

#define WARDEN_IMPORT(name) __attribute__((import_module("warden"), import_name(name)))

/* The raw imports, one for one with DESIGN §4. */
WARDEN_IMPORT("critical_enter") void warden_critical_enter(void);
WARDEN_IMPORT("critical_exit") void warden_critical_exit(void);
WARDEN_IMPORT("constrained_enter") void warden_constrained_enter(void);
WARDEN_IMPORT("constrained_exit") void warden_constrained_exit(void);
WARDEN_IMPORT("abort_requested") int32_t warden_abort_requested(void);
WARDEN_IMPORT("lock_acquire")
int32_t warden_lock_acquire_n(const char *name, int32_t name_len, int64_t timeout_ms);
WARDEN_IMPORT("lock_release") int32_t warden_lock_release_n(const char *name, int32_t name_len);
WARDEN_IMPORT("gate_reserve") int32_t warden_gate_reserve(int64_t bytes);
WARDEN_IMPORT("gate_release") int32_t warden_gate_release(int32_t token);
WARDEN_IMPORT("sleep_ms") int32_t warden_sleep_ms(int64_t ms);
WARDEN_IMPORT("log") void warden_log_n(int32_t level, const char *message, int32_t len);
WARDEN_IMPORT("handle_close") int32_t warden_handle_close(int32_t handle);
/* Call export `export` of the domain linked as `link` with `in` (copied), the result copied
 * into `out` (at most out_cap bytes). The result's full length, or a warden_status. */
WARDEN_IMPORT("domain_call")
int32_t warden_domain_call_n(const char *link, int32_t link_len, const char *export_name,
                             int32_t export_len, const void *in, int32_t in_len, void *out,
                             int32_t out_cap, int64_t timeout_ms);

#undef WARDEN_IMPORT

/* Wait for ever in warden_lock_acquire. */
#define WARDEN_FOREVER ((int64_t)-1)

static inline int32_t warden__len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return (int32_t)n;
}

/* Take the host lock `name` (NUL-terminated), waiting at most timeout_ms (WARDEN_FOREVER:
 * no bound). WARDEN_OK or WARDEN_POISONED mean you hold it; anything else means you do not. */
static inline int32_t warden_lock_acquire(const char *name, int64_t timeout_ms) {
    return warden_lock_acquire_n(name, warden__len(name), timeout_ms);
}

/* Release the host lock `name`. A polite abort deferred by the lock lands here. */
static inline int32_t warden_lock_release(const char *name) {
    return warden_lock_release_n(name, warden__len(name));
}

/* Whether a lock_acquire result means the lock is now yours. */
static inline int warden_lock_held(int32_t status) {
    return status == WARDEN_OK || status == WARDEN_POISONED;
}

/* A log line (NUL-terminated) for the host. */
static inline void warden_log(int32_t level, const char *message) {
    warden_log_n(level, message, warden__len(message));
}

/* A short name for an error code, for log lines. */
static inline const char *warden_status_name(int32_t status) {
    switch (status) {
    case WARDEN_OK: return "ok";
    case WARDEN_TIMEOUT: return "timeout";
    case WARDEN_DEADLOCK_VICTIM: return "deadlock victim";
    case WARDEN_ABORTED: return "aborted";
    case WARDEN_POISONED: return "poisoned";
    case WARDEN_NOT_PERMITTED: return "not permitted";
    case WARDEN_HELD: return "already held / not held";
    case WARDEN_INSUFFICIENT_MEMORY: return "insufficient memory";
    case WARDEN_BAD_ARGUMENT: return "bad argument";
    default: return status > 0 ? "token" : "unknown";
    }
}

/* Mark the guest's finalizer, `void warden_on_unload(void)`, for export:
 *     WARDEN_FINALIZER void warden_on_unload(void) { ... }                               */
#define WARDEN_FINALIZER __attribute__((export_name("warden_on_unload")))

/* Export a function under `name` (for `warden run --invoke name`). */
#define WARDEN_EXPORT(name) __attribute__((export_name(name)))

#ifdef __cplusplus
}
#endif

#endif /* WARDEN_H */
