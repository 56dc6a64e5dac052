/*
 * transfer.c — a C guest for Warden that uses every part of warden.h a real guest needs:
 * a memory-gate reservation before the work, two host locks, a critical region around the
 * state change, backing out when it is chosen as a deadlock victim, and a finalizer.
 *
 * `ab` moves 10 from account A to account B, taking lock "A" then "B"; `ba` the other way
 * round. Run both at once and they cross: one of them closes the cycle and is told
 * WARDEN_DEADLOCK_VICTIM, releases what it holds and returns -2; the other completes:
 *
 *     clang --target=wasm32-wasi -O2 -mexec-model=reactor -I sdk/c \
 *         sdk/c/examples/transfer.c -o transfer.wasm
 *     warden run transfer.wasm --grant unsafe --invoke ab --invoke ba --events json
 *
 * Each domain has its own memory, so each finalizer reports its own domain's tally.
 */
#include <stdio.h>

#include "warden.h"

static long long balance[2] = {100, 100}; /* accounts A and B */
static int transferred, backed_out;
static char line[128];

static void say(const char *what, const char *first, int32_t status) {
    snprintf(line, sizeof line, "%s %s: %s", what, first, warden_status_name(status));
    warden_log(WARDEN_LOG_INFO, line);
}

/* Takes `first` then `second`, moves 10 from account `from` to `to`. */
static int32_t transfer(const char *first, const char *second, int from, int to) {
    /* Reserve before any work: a refusal (-7) comes while nothing is half done. */
    int32_t token = warden_gate_reserve(64 * 1024);
    if (token < 0) {
        say("gate refused", first, token);
        return token;
    }
    int32_t r = warden_lock_acquire(first, WARDEN_FOREVER);
    if (!warden_lock_held(r)) {
        warden_gate_release(token);
        return r;
    }
    /* Only to make the example deterministic: wait until the other call holds `second` (a
     * try that times out at once says it does), so that the two calls really cross. */
    for (;;) {
        r = warden_lock_acquire(second, 0);
        if (r == WARDEN_TIMEOUT)
            break;
        if (r == WARDEN_DEADLOCK_VICTIM)
            goto back_out;
        if (!warden_lock_held(r))
            goto fail;
        warden_lock_release(second);
        warden_sleep_ms(1);
    }
    r = warden_lock_acquire(second, WARDEN_FOREVER);
    if (r == WARDEN_DEADLOCK_VICTIM)
        goto back_out;
    if (!warden_lock_held(r))
        goto fail;

    /* The state change: an abort here would leave it half done, so it is deferred. */
    warden_critical_enter();
    balance[from] -= 10;
    balance[to] += 10;
    transferred++;
    warden_critical_exit();

    warden_lock_release(second);
    warden_lock_release(first);
    warden_gate_release(token);
    return WARDEN_OK;

back_out:
    /* The victim: nothing was changed yet, so releasing what it holds is all the repair
     * there is; the other call can then finish. */
    backed_out++;
    say("deadlock victim, backing out of", first, r);
    warden_lock_release(first);
    warden_gate_release(token);
    return WARDEN_DEADLOCK_VICTIM;

fail:
    say("lock failed after", first, r);
    warden_lock_release(first);
    warden_gate_release(token);
    return r;
}

WARDEN_EXPORT("ab") int32_t ab(void) { return transfer("A", "B", 0, 1); }
WARDEN_EXPORT("ba") int32_t ba(void) { return transfer("B", "A", 1, 0); }

/* The finalizer: runs once when the domain is unloaded politely, bounded by the policy's
 * finalizer-run timeout. It only reports; the host releases locks and reservations anyway. */
WARDEN_FINALIZER void warden_on_unload(void) {
    snprintf(line, sizeof line, "finalizer: %d transferred, %d backed out, A=%lld B=%lld",
             transferred, backed_out, balance[0], balance[1]);
    warden_log(WARDEN_LOG_INFO, line);
}
