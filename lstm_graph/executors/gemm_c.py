"""The native executor's packed GEMM and thread pool, as C text, and the weight packing.

The per-step GEMMs of a cell are small and repeated (``T`` times over the same
weights), so they are worth their own code rather than a BLAS call per step:

- **Packed weights.** A GEMM's weights ``W`` (``K × nv·H``: ``nv`` gate blocks of
  ``H`` columns each) are packed once into panels, one per *unit tile* of
  :data:`LANES <lanes>` hidden units: panel ``u`` holds, for every ``k``, the
  tile's units of every block side by side (``W[k, v·H + u·lanes + l]`` at
  ``[u, k, v, l]``). A tile's panel is contiguous, so the micro-kernel streams it.
- **Micro-kernel.** :func:`micro_kernel` writes, for ``m`` rows and ``c`` gate
  blocks, a register-blocked kernel with ``m × c`` vector accumulators, unrolled,
  in GCC's vector extensions: the vector is 64 bytes wide where the compiler
  targets AVX-512, 32 with AVX, else 16 (the ``VB`` macro of :data:`RUNTIME`), so
  one source serves every x86 machine (and others). Rows come in blocks of up to 6;
  a kernel takes up to 4 blocks with AVX-512's 32 vector registers; with 16 (AVX2)
  as many as the accumulators, a row of the panel and a broadcast fit in the
  registers for its rows (:func:`widest`: 2 blocks for 5 or 6 rows, 3 for 3 or 4, 4
  for 1 or 2: 4 rows × 2 blocks made 8 chains of FMAs too few to hide their latency);
  those of 5 and 6 rows, which read every other line of their panel, prefetch its
  whole rows in their first pass (:func:`prefetches`).
  Only these kernels may have ``a·b + c`` contracted into fused multiply-adds by the
  compiler; the element-wise code is not (its ``exp`` and
  ``tanh`` spell out theirs, where the target has them).
- **Thread pool.** :data:`RUNTIME` keeps persistent worker threads. A run wakes
  them once (a condition variable), they split the hidden units' tiles, meet at a
  spin barrier after every segment of every step, and when the run ends look for the
  next one for 200 µs (back-to-back runs skip the wake, 20 µs on a VM) before they go
  back to sleep on the condition variable. A thread that waits for another (at the
  barrier, or the caller for the workers at the end) spins while every thread of the
  run is running, and yields its CPU where one is not (:data:`WAIT_CHECK_NS`): on a
  machine with more threads to run than CPUs (another program's), the thread waited
  for may be waiting for that CPU. Measured on AMD EPYC (Zen 4), 2 vCPUs, 64 steps
  of 7 sequences, H = 129 (one thread alone: 0.83 ms a run), spinning 100 µs before
  yielding (as before) against yielding once a thread is seen not running: two
  processes of 2 threads each, 7.7-8.0 ms a run in two tries of three (0.51 in the
  third) against 0.51-0.90; 2 threads on one CPU, 7.6 against 1.8.

The lane count a build uses is known only to the compiler; the generated library
reports it (``lstm_graph_lanes``) and the packing here uses that.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import numpy as np

from lstm_graph.executors.codegen_c import Symbol

#: Gate blocks one job covers at most (one kernel call with AVX-512; see :func:`widest`).
MAX_BLOCKS = 4
#: Rows of the largest micro-kernel (``MR`` in the C).
MAX_ROWS = 6
#: Panel rows ahead that a kernel which prefetches asks for (:func:`prefetches`): at 16
#: and 32, the same speed; at 4, 6 % less (AMD EPYC Zen 4, built for AVX2).
PREFETCH_ROWS = 16
#: Nanoseconds a thread spins for another (at a barrier; the caller, for the workers at
#: a run's end) before it yields its CPU between looks (:data:`RUNTIME`'s ``wait_change``).
WAIT_SPIN_NS = 100000
#: Nanoseconds of a wait before a waiting thread first looks at whether the threads of
#: its run are running, and between its first two looks (then twice as long each time:
#: ``wait_change``): where one is not, the waiting thread yields at once.
WAIT_CHECK_NS = 4000
#: Bytes the arrays the kernels stream are aligned to (a cache line, an AVX-512 vector).
ALIGNMENT = 64
#: The lanes a library packs its weights for (hidden units per tile).
LANES_SYMBOL = Symbol("lstm_graph_lanes", (), ctypes.c_ssize_t)
#: How many waits of a library's threads found a thread of their run not running, and
#: yielded (``wait_change``): for tests and diagnosis.
YIELDED = Symbol("lstm_graph_waits_yielded", (), ctypes.c_uint64)
#: Puts new weights into their packed places (see :class:`Placement`).
PLACE = Symbol("lstm_graph_place", (ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_void_p))
#: The signature of an exported function run on the pool (:func:`entry`):
#: ``(t0, t1, batch, void **a, threads)``.
POOLED = (ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_void_p,
          ctypes.c_ssize_t)

RUNTIME = r"""
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The vector: as wide as the widest registers the compiler may use. */
#if defined(__AVX512F__)
#define VB 64
#elif defined(__AVX__)
#define VB 32
#else
#define VB 16
#endif
#define MR @MAX_ROWS@  /* rows the micro-kernels take at once */
#define WIDEST (VB == 64 ? 4 : 2)  /* vectors a micro-kernel takes at once per row */
typedef T vec __attribute__((vector_size(VB)));
#define LANES ((ptrdiff_t)(VB / sizeof(T)))
/* the vectors a tile of at most c vectors multiplies where n of its columns are left (0
   or fewer past the end): a partial last tile's panel is packed only that wide
   (pack_panels' dense tail) */
#define TILE_VECTORS(n, c) ((n) >= (c) * LANES ? (c) : ((n) + LANES - 1) / LANES)

/* A function whose loops the compiler vectorises at most 256 bits wide (then 128 for
   what is left): loops over fewer units than a vector, which would otherwise run one by
   one in the remainder of the widest vectors' loop (GCC on x86; elsewhere as is). */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define NARROW_VECTORS __attribute__((noinline, target("prefer-vector-width=256")))
#else
#define NARROW_VECTORS __attribute__((noinline))
#endif

/* A hint to bring row q + PREFETCH_ROWS of a panel of ps vectors a row, from p, into
   the caches: its first line, and the next where the row is longer than a line (rows
   of up to 4 vectors, at most 128 bytes where kernels prefetch: 16 vector registers).
   Integer arithmetic: the row may lie past the panel's end, and a prefetch never
   faults. See micro_kernel's prefetching. */
#define PREFETCH_ROWS @PREFETCH_ROWS@
static inline void prefetch_row(const T *p, ptrdiff_t q, ptrdiff_t ps) {
    const uintptr_t row = (uintptr_t)p + (uintptr_t)((q + PREFETCH_ROWS) * ps) * sizeof(vec);
    __builtin_prefetch((const void *)row, 0, 3);
    if (ps * (ptrdiff_t)sizeof(vec) > 64) __builtin_prefetch((const void *)(row + 64), 0, 3);
}

/* Unaligned vector load and store (memcpy compiles to one instruction). */
static inline vec load_vec(const T *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store_vec(T *p, vec v) { memcpy(p, &v, sizeof v); }

/* acc += p[q] - p[q] for the n numbers at p: v - v is 0 for every finite v and NaN
   otherwise, and a sum that meets NaN stays NaN, so acc stays 0 in every lane while the
   numbers are finite (two sums in the loop, so their adds wait less on each other; the
   lanes are summed once, by nonfinite_seen, not at every call). */
static inline void look_at(vec *restrict acc, const T *restrict p, ptrdiff_t n) {
    vec s0 = *acc, s1 = {0};
    ptrdiff_t q = 0;
    for (; q + 2 * LANES <= n; q += 2 * LANES) {
        const vec v0 = load_vec(p + q), v1 = load_vec(p + q + LANES);
        s0 += v0 - v0;
        s1 += v1 - v1;
    }
    for (; q < n; q++) s1[0] += p[q] - p[q];
    *acc = s0 + s1;
}

/* Whether look_at saw a number that is not finite. */
static inline _Bool nonfinite_seen(vec acc) {
    T sum = 0;
    for (ptrdiff_t l = 0; l < LANES; l++) sum += acc[l];
    return sum != 0;
}

/* The lanes (hidden units per tile) this build packs its weights for. */
ptrdiff_t @LANES_SYMBOL@(void) { return LANES; }

/* New weights into their packed places, one pass over each packed array: place p of
   target c takes element (v & 2^40 - 1) of source (v >> 40), v = maps[c][p] (v < 0: a
   padding place, left as it is). */
void @PLACE_SYMBOL@(ptrdiff_t count, void **targets, void **maps, const ptrdiff_t *sizes,
                    void **sources) {
    for (ptrdiff_t c = 0; c < count; c++) {
        T *restrict target = (T *)targets[c];
        const int64_t *restrict map = (const int64_t *)maps[c];
        for (ptrdiff_t p = 0; p < sizes[c]; p++) {
            const int64_t v = map[p];
            if (v >= 0) target[p] = ((const T *)sources[v >> 40])[v & (((int64_t)1 << 40) - 1)];
        }
    }
}

/* -- the thread pool: workers meet at a barrier within a run, look for the next run a
   while after one, then sleep -- */

#define MAX_THREADS 64
/* How long a worker looks for the next run before it sleeps: back-to-back runs (a
   benchmark's, a training loop's, a sweep's) then skip waking it, which took 20 us a
   run on a 2-vCPU VM (a third of a 60 us run). OpenMP runtimes spin as long or longer. */
#define POOL_SPIN_NS 200000
#define WAIT_SPIN_NS @WAIT_SPIN_NS@
#define WAIT_CHECK_NS @WAIT_CHECK_NS@
/* What a pooled call runs: part `part` of `parts` of steps t0 <= t < t1 over `batch` rows. */
typedef void (*part_fn)(ptrdiff_t part, ptrdiff_t parts, ptrdiff_t t0, ptrdiff_t t1,
                        ptrdiff_t batch, void **a);

typedef struct { part_fn fn; ptrdiff_t t0, t1, batch; void **a; ptrdiff_t parts; } work_t;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;  /* one pooled run at a time */
static ptrdiff_t pool_workers;          /* worker threads running (the caller is part 0) */
static pid_t pool_pid;            /* the process that started them (a fork has none) */
static uint64_t pool_round;       /* bumped for every run */
static work_t pool_work;
static ptrdiff_t pool_done;       /* workers finished with the current run */
static ptrdiff_t barrier_count, barrier_sense;
static clockid_t part_clocks[MAX_THREADS];  /* each part's thread's CPU-time clock */
static ptrdiff_t run_parts;                 /* the parts of the run in progress */

/* Clock `clock`'s time in ns (0 where it cannot be read). */
static uint64_t clock_ns(clockid_t clock) {
    struct timespec now = {0, 0};
    clock_gettime(clock, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static uint64_t pool_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* A thread's CPU-time clock; where there is none, one that always runs (its thread is
   then always seen running: waits spin, then yield after WAIT_SPIN_NS). */
static clockid_t thread_clock(pthread_t thread) {
#if defined(__linux__)
    clockid_t clock;
    if (pthread_getcpuclockid(thread, &clock) == 0) return clock;
#else
    (void)thread;
#endif
    return CLOCK_MONOTONIC;
}

/* The CPU time of each of the run's parts' threads, in ns, into times. */
static void part_times(uint64_t *times) {
    for (ptrdiff_t p = 0; p < run_parts; p++) times[p] = clock_ns(part_clocks[p]);
}

/* Whether every part's thread ran at least half of the last `wall` ns (working, or
   spinning as the caller does), given their CPU times then (`times`, made now's). */
static _Bool parts_running(uint64_t *times, uint64_t wall) {
    uint64_t now[MAX_THREADS];
    part_times(now);
    _Bool running = 1;
    for (ptrdiff_t p = 0; p < run_parts; p++) {
        if (now[p] - times[p] < wall / 2) running = 0;
        times[p] = now[p];
    }
    return running;
}

/* Waits that found a thread of their run not running, and yielded (for tests and
   diagnosis: YIELDED_SYMBOL). */
static uint64_t waits_yielded;
uint64_t @YIELDED_SYMBOL@(void) { return __atomic_load_n(&waits_yielded, __ATOMIC_RELAXED); }

/* Wait until *word is no longer `seen`. Spin while every thread of the run is running
   (looked at once the wait has lasted WAIT_CHECK_NS, then at 2, 4, 8... times that: a
   look reads every thread's clock, half a microsecond each on a VM); where one is not
   (the machine has more threads to run than CPUs), or after WAIT_SPIN_NS, yield the
   CPU instead: the thread waited for may be waiting for this one's CPU. */
static void wait_change(const ptrdiff_t *word, ptrdiff_t seen) {
    uint64_t start = 0, mark = 0, interval = WAIT_CHECK_NS, times[MAX_THREADS];
    _Bool yield = 0;
    for (uint32_t spins = 1; __atomic_load_n(word, __ATOMIC_ACQUIRE) == seen; spins++) {
        if (yield) {
            sched_yield();
            continue;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (spins % 32) continue;
        const uint64_t now = pool_now_ns();
        if (!start) start = now;
        if (now - start >= WAIT_SPIN_NS) {
            yield = 1;
            continue;
        }
        if (now - start < WAIT_CHECK_NS || now - mark < interval) continue;
        if (!mark) {  /* the CPU times from here on */
            mark = now;
            part_times(times);
            continue;
        }
        yield = !parts_running(times, now - mark);
        if (yield) __atomic_add_fetch(&waits_yielded, 1, __ATOMIC_RELAXED);
        mark = now;
        interval *= 2;
    }
}

/* Wait until all `parts` threads arrive (sense-reversing; see wait_change). */
static void barrier(ptrdiff_t parts, ptrdiff_t *sense) {
    if (parts == 1) return;
    *sense = !*sense;
    if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == parts) {
        __atomic_store_n(&barrier_count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&barrier_sense, *sense, __ATOMIC_RELEASE);
        return;
    }
    wait_change(&barrier_sense, !*sense);
}

/* A worker: wait for a run to be posted (spinning for POOL_SPIN_NS, then asleep), take
   part in it if it needs this worker. */
static void *pool_worker(void *arg) {
    const ptrdiff_t part = (ptrdiff_t)(intptr_t)arg;
    uint64_t seen = 0;
    for (;;) {
        const uint64_t until = pool_now_ns() + POOL_SPIN_NS;
        for (uint32_t spins = 1; __atomic_load_n(&pool_round, __ATOMIC_ACQUIRE) == seen;
             spins++) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            if (spins % 64 == 0 && pool_now_ns() > until) break;
        }
        pthread_mutex_lock(&pool_lock);
        while (pool_round == seen) pthread_cond_wait(&pool_wake, &pool_lock);
        seen = pool_round;
        const work_t w = pool_work;
        pthread_mutex_unlock(&pool_lock);
        if (part < w.parts) {
            w.fn(part, w.parts, w.t0, w.t1, w.batch, w.a);
            __atomic_add_fetch(&pool_done, 1, __ATOMIC_ACQ_REL);
        }
    }
    return NULL;
}

/* `fn` on up to `parts` threads (the caller and parts - 1 workers), returning when every
   part is done. Runs that share the pool (plans of one build, called from two threads)
   take turns. */
static void pool_run(part_fn fn, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t batch, void **a,
                     ptrdiff_t parts) {
    if (parts > MAX_THREADS) parts = MAX_THREADS;
    if (parts <= 1) {
        fn(0, 1, t0, t1, batch, a);
        return;
    }
    pthread_mutex_lock(&run_lock);
    pthread_mutex_lock(&pool_lock);
    if (pool_pid != getpid()) {  /* first run, or a forked child: no workers yet */
        pool_workers = 0;
        pool_pid = getpid();
    }
    while (pool_workers < parts - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const _Bool failed = pthread_create(&thread, &attr, pool_worker,
                                            (void *)(intptr_t)(pool_workers + 1)) != 0;
        pthread_attr_destroy(&attr);
        if (failed) break;
        pool_workers++;
        part_clocks[pool_workers] = thread_clock(thread);
    }
    if (parts > pool_workers + 1) parts = pool_workers + 1;
    part_clocks[0] = thread_clock(pthread_self());
    run_parts = parts;
    pool_work = (work_t){fn, t0, t1, batch, a, parts};
    __atomic_store_n(&pool_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool_round, pool_round + 1, __ATOMIC_RELEASE);  /* seen by spinners */
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_lock);
    fn(0, parts, t0, t1, batch, a);
    for (ptrdiff_t done; (done = __atomic_load_n(&pool_done, __ATOMIC_ACQUIRE)) < parts - 1;)
        wait_change(&pool_done, done);
    pthread_mutex_unlock(&run_lock);
}
"""


def runtime() -> str:
    """The vector type, the lane count, the thread pool: what every generated library
    starts with (after the preamble that defines ``T``)."""
    return RUNTIME.replace("@MAX_ROWS@", str(MAX_ROWS)) \
        .replace("@PREFETCH_ROWS@", str(PREFETCH_ROWS)) \
        .replace("@WAIT_SPIN_NS@", str(WAIT_SPIN_NS)) \
        .replace("@WAIT_CHECK_NS@", str(WAIT_CHECK_NS)) \
        .replace("@LANES_SYMBOL@", LANES_SYMBOL.name).replace("@PLACE_SYMBOL@", PLACE.name) \
        .replace("@YIELDED_SYMBOL@", YIELDED.name)


def entry(symbol: Symbol, part: str, what: str) -> str:
    """C for the exported function ``symbol``: ``part`` (a :data:`POOLED` part function)
    on the pool's threads."""
    return (f"/* {what} */\nvoid {symbol.name}(ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t batch, "
            f"void **a, ptrdiff_t parts) {{\n    pool_run({part}, t0, t1, batch, a, parts);\n}}")


def splits(rows: int, blocks: int, registers: int) -> int:
    """Partial sums per accumulator: few rows and blocks make short chains of dependent
    FMAs (each waits ~4 cycles for the last), so small kernels split ``k`` into 2 or 4
    interleaved sums, added at the end; at most half the vector ``registers`` for them."""
    return max(1, min(4, registers // 2 // (rows * blocks)))


def prefetches(rows: int, registers: int) -> bool:
    """Whether a kernel of ``rows`` rows asks for its panel's rows ahead of their use: with
    16 vector registers, those of 5 and 6 rows, which take 2 blocks (:func:`widest`), so
    that a job of 4 blocks reads each 128-byte row of its panel in two passes, every other
    64-byte line in each, a pattern the hardware prefetchers did not follow from the L3
    cache. Measured on AMD EPYC (Zen 4) built for AVX2, one thread, 6 rows, I = 128: H =
    128 (weights in the L2 cache) 114 GFLOP/s with or without; H = 256 (1.5 MiB of
    weights) 96-98 without, 114 with; I = H = 512, 95-96 against 112. Kernels of fewer
    rows read at least 3 blocks of a row, or all of it, and gained nothing (3 rows: 87
    against 84); AVX-512's read whole rows (116 GFLOP/s at every size above).

    The first pass over a panel's rows (the job's first blocks: ``lead``) asks for whole
    rows (both lines of a job of 3 or 4 blocks), and the second for none: where the
    weights come from memory or a busy L3 cache, that pass is the one that waits for
    them. Measured the same way, 2 threads, each variant's runs taking turns in one
    process (10th percentile / median of the runs, against one line in each pass):
    T = 35, B = 20, I = H = 650 0.91-0.92 / 0.86-0.90; I = H = 1500 0.86 / 0.87;
    T = 50, B = 64, I = H = 512 0.92 / 0.89; the medium LSTM, (50, 20, 200, 200),
    (30, 48, 384, 384) and (10, 256, 512, 1024) within 2 %; the gradient at PTB medium
    0.92 / 0.93, at PTB small and the medium LSTM within 3 %. Whole rows in both passes
    cost the medium LSTM 3-6 %; prefetching in the kernels of 3 and 4 rows too cost
    (35, 8, 650, 650) 13-17 %."""
    return registers < 32 and rows > 4


def micro_kernel(rows: int, columns: int, registers: int) -> str:
    """C for ``rows × columns`` vector accumulators: ``out (+)= bias + [a1 a2] · panel``.

    ``a1`` holds ``rows`` rows of ``k1`` numbers (row stride ``lda1``), ``a2`` rows of
    ``k2`` (``k2`` may be 0): the product of the two operands side by side, as for
    ``[x_t, h_{t-1}]``, in one set of accumulators. The panel holds ``ps`` vectors per
    ``k`` (one per block of the job), of which this kernel reads ``columns``; row ``r`` of
    block ``v`` goes to ``out[r·ldo + v·ldv]``: blocks are gate blocks ``H`` apart
    (``ldv = H``, each with the tile's ``n`` units) or neighbouring unit tiles
    (``ldv = LANES``, ``step = LANES``: block ``v`` has ``n - v·LANES`` of the ``n`` units
    the job's tile holds), so a tile at the end of the units may be partial. ``bias``
    (or NULL) is added, and with ``add`` the old contents. ``registers``: the target's
    vector registers. A kernel that :func:`prefetches` takes ``lead`` too: whether it
    is the job's first on these rows, which asks for the panel's rows ahead.
    """
    name, parts = f"kernel_{rows}x{columns}", splits(rows, columns, registers)
    prefetching = prefetches(rows, registers)
    acc = [[[f"c{r}_{v}" + (f"_{s}" if s else "") for s in range(parts)]
            for v in range(columns)] for r in range(rows)]

    def step(q: str, s: int, indent: str) -> list[str]:
        lines = [f"{indent}if (lead) prefetch_row(p, {q}, ps);"] if prefetching else []
        lines += [f"{indent}const vec w{v}_{s} = load_vec(p + (({q}) * ps + {v}) * LANES);"
                  for v in range(columns)]
        for r in range(rows):
            lines.append(f"{indent}const T a{r}_{s} = a[{r} * lda + {q}];")
            lines += [f"{indent}{acc[r][v][s]} += a{r}_{s} * w{v}_{s};" for v in range(columns)]
        return lines

    lines = [
        f"/* {rows} rows x {columns} blocks of one tile: out (+)= bias + [a1 a2] . "
        "panel" + (f" ({parts} interleaved partial sums) */" if parts > 1 else " */"),
        f"static void {name}(ptrdiff_t k1, const T *restrict a1, ptrdiff_t lda1, ptrdiff_t k2,",
        "        const T *restrict a2, ptrdiff_t lda2, const T *restrict panel, ptrdiff_t ps,",
        "        const T *restrict bias, T *restrict out, ptrdiff_t ldo, ptrdiff_t ldv,",
        "        ptrdiff_t n, ptrdiff_t step, _Bool add"
        + (", _Bool lead) {" if prefetching else ") {"),
        *(f"    vec {', '.join(f'{c} = {{0}}' for sums in row for c in sums)};" for row in acc),
    ]
    for operand, size, start in (("a1", "k1", "panel"), ("a2", "k2", "panel + k1 * ps * LANES")):
        lines += ["    {", f"    const T *restrict a = {operand}, *restrict p = {start};",
                  f"    const ptrdiff_t k = {size}, lda = lda{operand[1]};", "    ptrdiff_t q = 0;"]
        if parts > 1:
            lines.append(f"    for (; q + {parts} <= k; q += {parts}) {{")
            for s in range(parts):
                lines += step(f"q + {s}", s, "        ")
            lines.append("    }")
        # The rest counted from k (not ``q < k``): GCC 12 took the rest's loop, dead where
        # k is a constant multiple of ``parts``, for one of 2^58 iterations and warned.
        rest = (f"ptrdiff_t left = k % {parts}; left > 0; left--, q++" if parts > 1
                else "; q < k; q++")
        lines += [f"    for ({rest}) {{", *step("q", 0, "        "), "    }", "    }"]
    for r in range(rows):
        for v in range(columns):
            total = " + ".join(acc[r][v]) if parts > 1 else acc[r][v][0]
            lines.append(f"    store_tile(out + {r} * ldo + {v} * ldv, {total}, "
                         f"bias ? bias + {v} * LANES : NULL, n - {v} * step, add);")
    lines.append("}")
    return "\n".join(lines)


def outer_kernel(rows: int, columns: int) -> str:
    """C for ``out (+)= aᵀ · b`` on ``rows × columns`` vector accumulators, summed over the
    ``q`` rows of both operands: the weight gradients' product, ``Σ_t [x_t, h_{t-1}]ᵀ ·
    dZ_t`` over every step's rows. Accumulator ``(r, v)`` is ``Σ_q a[q·lda + r] ·
    b[q·ldb + v·LANES]``: each of the ``q`` rows gives ``rows`` numbers of ``a`` (side by
    side in memory) and ``columns`` vectors of ``b``, as the forward kernels' rows and
    panel do. Block ``v`` of output row ``r`` is added to ``out[r·ldo + v·LANES]``, its
    first ``n - v·LANES`` lanes."""
    name = f"outer_{rows}x{columns}"
    acc = [[f"c{r}_{v}" for v in range(columns)] for r in range(rows)]
    lines = [
        f"/* {rows} rows x {columns} vectors of out += a^T . b, summed over q rows */",
        f"static void {name}(ptrdiff_t k, const T *restrict a, ptrdiff_t lda, "
        "const T *restrict b, ptrdiff_t ldb,",
        "        T *restrict out, ptrdiff_t ldo, ptrdiff_t n) {",
        *(f"    vec {', '.join(f'{c} = {{0}}' for c in row)};" for row in acc),
        "    for (ptrdiff_t q = 0; q < k; q++) {",
        *(f"        const vec w{v} = load_vec(b + q * ldb + {v} * LANES);"
          for v in range(columns))]
    for r in range(rows):
        lines.append(f"        const T a{r} = a[q * lda + {r}];")
        lines += [f"        {acc[r][v]} += a{r} * w{v};" for v in range(columns)]
    lines.append("    }")
    for r in range(rows):
        for v in range(columns):
            lines.append(f"    store_tile(out + {r} * ldo + {v} * LANES, {acc[r][v]}, NULL, "
                         f"n - {v} * LANES, 1);")
    lines.append("}")
    return "\n".join(lines)


STORE_TILE = r"""
/* out[0:n] = v (+ bias) (+ out[0:n] where add): a whole vector, its first n lanes, or
   nothing where n <= 0 (a block past the end of a partial tile). */
static inline void store_tile(T *restrict out, vec v, const T *restrict bias, ptrdiff_t n,
                              _Bool add) {
    if (n <= 0) return;
    if (bias) v += load_vec(bias);
    if (n >= LANES) {
        if (add) v += load_vec(out);
        store_vec(out, v);
    } else {
        for (ptrdiff_t l = 0; l < n; l++) out[l] = add ? out[l] + v[l] : v[l];
    }
}
"""


def pieces(blocks: int, widest: int) -> list[tuple[int, int]]:
    """``(first, count)`` runs of at most ``widest`` of a job's ``blocks`` blocks."""
    return [(v, min(widest, blocks - v)) for v in range(0, blocks, widest)]


def widest(rows: int, registers: int) -> int:
    """Blocks a micro-kernel of ``rows`` rows takes at once: all of a job's with 32 vector
    registers; with 16, as many as its accumulators (at most 12), a row of the panel and
    a broadcast leave registers for (6 or 5 rows: 2 blocks; 4 or 3: 3; 2 or 1: 4): fewer
    blocks make too few independent chains of FMAs to hide their latency, more spill."""
    if registers >= 32:
        return MAX_BLOCKS
    return max(c for c in range(1, MAX_BLOCKS + 1)
               if c == 1 or (rows * c <= 12 and rows * c + c + 1 <= registers))


def dispatch(blocks: int, registers: int) -> str:
    """C that runs a job of ``blocks`` blocks on ``m`` rows (``1 ≤ m ≤ MR``): one kernel
    call per run of at most :func:`widest` blocks (the first of them the ``lead``, where
    the kernels prefetch)."""
    lines = [f"/* m rows (m <= MR) x {blocks} blocks */",
             f"static inline void kernel_{blocks}(ptrdiff_t m, ptrdiff_t k1, const T *a1, "
             "ptrdiff_t lda1, ptrdiff_t k2, const T *a2, ptrdiff_t lda2, const T *panel, "
             "const T *bias, T *out, ptrdiff_t ldo, ptrdiff_t ldv, ptrdiff_t n, "
             "ptrdiff_t step, _Bool add) {", "    switch (m) {"]
    for r in range(1, MAX_ROWS + 1):
        calls = [f"kernel_{r}x{count}(k1, a1, lda1, k2, a2, lda2, panel + {first} * LANES, "
                 f"{blocks}, bias ? bias + {first} * LANES : NULL, out + {first} * ldv, ldo, "
                 f"ldv, n - {first} * step, step, add"
                 + (f", {int(first == 0)});" if prefetches(r, registers) else ");")
                 for first, count in pieces(blocks, widest(r, registers))]
        lines.append(f"    case {r}: {' '.join(calls)} break;")
    lines += ["    }", "}"]
    return "\n".join(lines)


def outer_dispatch(widest: int) -> str:
    """C for ``out (+)= aᵀ·b`` over ``k`` rows on an ``m × c`` tile (``m ≤ MR`` rows of
    ``out``, ``c ≤ widest`` vectors): the outer kernel of that shape."""
    lines = ["/* out[m rows, c vectors] += a^T . b over k rows (m <= MR, c <= "
             f"{widest}) */",
             "static inline void outer(ptrdiff_t m, ptrdiff_t c, ptrdiff_t k, const T *a, "
             "ptrdiff_t lda, const T *b, ptrdiff_t ldb, T *out, ptrdiff_t ldo, ptrdiff_t n) {",
             "    switch (m * 8 + c) {"]
    lines += [f"    case {r * 8 + c}: outer_{r}x{c}(k, a, lda, b, ldb, out, ldo, n); break;"
              for r in range(1, MAX_ROWS + 1) for c in range(1, widest + 1)]
    lines += ["    }", "}"]
    return "\n".join(lines)


def vectors_dispatch() -> str:
    """C for ``kernel_c``: ``m`` rows × ``c`` vectors (``c ≤`` :data:`MAX_BLOCKS`, in as many
    kernel calls as :func:`widest` allows) of neighbouring unit tiles, a GEMM whose columns
    are one run (no gate blocks): the hoisted products before the loop, the backward
    pass's."""
    lines = ["/* m rows x c vectors of out (+)= [a1 a2] . panel */",
             "static inline void kernel_c(ptrdiff_t c, ptrdiff_t m, ptrdiff_t k1, const T *a1, "
             "ptrdiff_t lda1, ptrdiff_t k2, const T *a2, ptrdiff_t lda2, const T *panel, "
             "const T *bias, T *out, ptrdiff_t ldo, ptrdiff_t ldv, ptrdiff_t n, ptrdiff_t step, "
             "_Bool add) {", "    switch (c) {"]
    lines += [f"    case {c}: kernel_{c}(m, k1, a1, lda1, k2, a2, lda2, panel, bias, out, ldo, "
              "ldv, n, step, add); break;" for c in range(1, MAX_BLOCKS + 1)]
    lines += ["    }", "}"]
    return "\n".join(lines)


def tail_dispatch(blocks: int) -> str:
    """C for ``kernel_tail_<blocks>``: a job of ``blocks`` gate blocks on the last, partial
    unit tile (``TAIL`` units: ``HIDDEN % LANES``), whose panel holds the blocks' units side
    by side (:func:`pack_panels`), so that it multiplies ``blocks·TAIL`` columns rounded up
    to whole vectors, not ``blocks`` vectors of mostly padding; the products go through a
    scratch tile to their blocks."""
    return "\n".join([
        f"/* m rows (m <= MR) x {blocks} gate blocks of the last, partial unit tile */",
        f"static inline void kernel_tail_{blocks}(ptrdiff_t m, ptrdiff_t k1, const T *a1, "
        "ptrdiff_t lda1, ptrdiff_t k2, const T *a2, ptrdiff_t lda2, const T *panel, "
        "const T *bias, T *out, ptrdiff_t ldo, _Bool add) {",
        f"    enum {{ VECTORS = TAIL ? ({blocks} * TAIL + LANES - 1) / LANES : 1 }};",
        "    T tile[MR * VECTORS * LANES] __attribute__((aligned(64)));",
        "    kernel_c(VECTORS, m, k1, a1, lda1, k2, a2, lda2, panel, bias, tile, "
        "VECTORS * LANES, LANES, VECTORS * LANES, LANES, 0);",
        "    for (ptrdiff_t r = 0; r < m; r++)",
        f"        for (ptrdiff_t v = 0; v < {blocks}; v++)",
        "            for (ptrdiff_t l = 0; l < TAIL; l++) {",
        "                const T found = tile[r * VECTORS * LANES + v * TAIL + l];",
        "                T *const place = out + r * ldo + v * HIDDEN + l;",
        "                *place = add ? *place + found : found;",
        "            }",
        "}"])


def kernels(blocks: set[int], outer: bool = False) -> str:
    """Every micro-kernel these jobs' block counts need (and, with ``outer``, the outer
    kernels of the weight gradients), contracted to FMAs, and their dispatch: 6 rows ×
    up to 4 blocks with AVX-512's 32 vector registers; with 16 (AVX2, SSE) as many blocks
    as fit for the rows (:func:`widest`; 6 × 2: the classic 6 × 16 floats of AVX2). The
    outer kernels take at most ``most`` vectors: 4 with 32 registers, 2 with 16."""
    opening = "\n".join([
        "/* The micro-kernels: the only code where a * b + c may become one fused",
        "   multiply-add (one rounding instead of two). */",
        "#if defined(__clang__)", "#pragma clang fp contract(fast)",
        "#elif defined(__GNUC__)", "#pragma GCC push_options",
        '#pragma GCC optimize("fp-contract=fast")', "#endif"])
    closing = "\n".join(["#if defined(__clang__)", "#pragma clang fp contract(off)",
                         "#elif defined(__GNUC__)", "#pragma GCC pop_options", "#endif"])
    parts = [opening, STORE_TILE.strip()]
    blocks = set(blocks) | {1, 2, 3, 4}  # kernel_c takes any vector count up to 4
    for condition, registers, most in (("#if VB == 64  /* AVX-512: 32 vector registers */",
                                        32, 4), ("#else  /* 16 vector registers */", 16, 2)):
        shapes = sorted({(c, r) for r in range(1, MAX_ROWS + 1) for b in blocks
                         for _, c in pieces(b, widest(r, registers))})
        parts += [condition, *(micro_kernel(r, c, registers) for c, r in shapes)]
        parts += [dispatch(b, registers) for b in sorted(blocks)]
        parts.append(vectors_dispatch())
        parts += [tail_dispatch(b) for b in sorted(blocks) if b > 1]
        if outer:
            parts += [outer_kernel(r, c) for c in range(1, most + 1)
                      for r in range(1, MAX_ROWS + 1)]
            parts.append(outer_dispatch(most))
    parts += ["#endif", closing]
    return "\n\n".join(parts) + "\n"


#: Bits of a place's map value that hold the element's index (the rest: the parameter's).
INDEX_BITS = 40


def tags(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter as float64 numbers naming its elements: parameter ``k``'s element
    ``i`` is ``k·2⁴⁰ + i + 1`` (exact in float64), so that packing them (copies,
    transposes, concatenations and zero padding only) shows where each element goes; 0
    where none does."""
    return {name: (np.arange(np.size(value), dtype=np.float64) + (k << INDEX_BITS) + 1)
            .reshape(np.shape(value)) for k, (name, value) in enumerate(params.items())}


class Placement:
    """Where each parameter's elements go in a build's packed arrays, and the one C pass
    (:data:`PLACE`) that puts new weights there: a trainer's new weights, every step,
    without packing them anew in NumPy. The maps (an ``int64`` a packed number, from
    packing :func:`tags`) are made at the first :meth:`load`: a build that never gets
    new weights (a forward run, a gradient) never holds them, nor the float64 copies of
    the weights that making them takes (PTB medium's first gradient: a peak resident set
    of 196 MiB, not 401)."""

    def __init__(self, library: ctypes.CDLL, names: list[str], targets: dict[str, np.ndarray],
                 tagged: Callable[[], Mapping[str, np.ndarray]]):
        """``targets``: the packed arrays by name; ``tagged`` makes the same arrays packed
        from :func:`tags` of the parameters ``names`` (in that order)."""
        self.names, self.place = names, PLACE.bind(library)
        self.targets, self.tagged = targets, tagged
        self._maps: _Maps | None = None

    def _made(self) -> _Maps:
        """The maps, made the first time they are needed."""
        if self._maps is None:
            tagged, targets = self.tagged(), self.targets
            order = [name for name in targets if name in tagged]
            for name in order:  # the C writes the arrays in place: they must own their numbers
                if not targets[name].flags.c_contiguous:
                    raise ValueError(f"the packed array {name} is not contiguous")
            maps = [(np.rint(np.asarray(tagged[name], dtype=np.float64)).astype(np.int64)
                     - 1).ravel() for name in order]
            count = len(order)
            self._maps = _Maps(count, (ctypes.c_void_p * count)(*(targets[n].ctypes.data
                                                                  for n in order)),
                               (ctypes.c_void_p * count)(*(m.ctypes.data for m in maps)),
                               (ctypes.c_ssize_t * count)(*(targets[n].size for n in order)),
                               maps)
        return self._maps

    def load(self, params: Mapping[str, np.ndarray], dtype: np.dtype) -> None:
        """Put ``params`` (the names given, in ``dtype``) into their places."""
        made = self._made()
        sources = [np.ascontiguousarray(params[name], dtype=dtype) for name in self.names]
        self.place(made.number, made.targets, made.pointers, made.sizes,
                   (ctypes.c_void_p * len(sources))(*(a.ctypes.data for a in sources)))


class _Maps(NamedTuple):
    """:data:`PLACE`'s arguments for a build: the number of packed arrays, their
    addresses, their maps' addresses and their sizes; and the maps, which must live as
    long."""
    number: int
    targets: Any
    pointers: Any
    sizes: Any
    maps: list[np.ndarray]


def aligned_flat(size: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """An uninitialised 1-D array of ``size`` numbers whose data starts on a 64-byte
    boundary, and that address (see :func:`aligned_empty`)."""
    nbytes = size * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    # the address through a ctypes view of the buffer: a third of `raw.ctypes.data`'s time
    base = ctypes.addressof(ctypes.c_char.from_buffer(cast(Any, raw)))
    start = -base % ALIGNMENT
    return raw[start:start + nbytes].view(dtype), base + start


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-order array whose data starts on a 64-byte boundary, so that no
    vector load of a whole tile straddles two cache lines (which costs two loads: a
    run's time jumped by a third with the allocator's 16-byte alignment), and two
    threads writing neighbouring tiles never share a cache line."""
    return aligned_flat(math.prod(shape), dtype)[0].reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` in C order, 64-byte aligned (see :func:`aligned_empty`)."""
    placed = aligned_empty(array.shape, array.dtype)
    placed[...] = array
    return placed


def tiles(hidden: int, lanes: int) -> int:
    """Unit tiles of ``lanes`` hidden units covering ``hidden`` (the last may be partial)."""
    return -(-hidden // lanes)


def pack_panels(weights: np.ndarray | Sequence[np.ndarray], blocks: int, hidden: int,
                lanes: int, dense_tail: bool = False, vector: int | None = None) -> np.ndarray:
    """``weights`` ``(K, blocks·H)`` (or its rows in parts, stacked: a job's operands) as
    panels ``(tiles, K, blocks, lanes)``, zero-padded; with ``dense_tail``, the last,
    partial tile (``H % lanes`` units ``n``) as ``(K, ⌈blocks·n / vector⌉·vector)``, the
    blocks' ``n`` units side by side: for ``kernel_tail_<blocks>`` (``vector``: ``lanes``,
    the default), and for a tile of several vectors (``lanes`` a multiple of ``vector``)
    whose last one multiplies only the vectors its units need.

    Padding columns (units ``≥ H`` of the last tile) are computed and never stored,
    so their zero weights never meet a NaN that matters. Each part is copied straight
    into the aligned result: packing holds no other copy of the weights (a 576 MB step
    held four while it packed).
    """
    parts = [weights] if isinstance(weights, np.ndarray) else list(weights)
    k = sum(part.shape[0] for part in parts)
    vector = vector or lanes
    full, tail = divmod(hidden, lanes)
    dense = dense_tail and tail and (blocks > 1 or vector < lanes)
    vectors = -(-blocks * tail // vector) if dense else 0
    head_size = (full if dense else tiles(hidden, lanes)) * k * blocks * lanes
    packed = aligned_empty((head_size + k * vectors * vector,), parts[0].dtype)
    packed[...] = 0
    head = packed[:head_size].reshape(-1, k, blocks, lanes)
    last = packed[head_size:].reshape(k, vectors * vector)
    row = 0
    for part in parts:
        rows = part.shape[0]
        shaped = part.reshape(rows, blocks, hidden)
        head[:full, row:row + rows] = shaped[:, :, :full * lanes].reshape(
            rows, blocks, full, lanes).transpose(2, 0, 1, 3)
        if dense:
            last[row:row + rows, :blocks * tail] = shaped[:, :, full * lanes:].reshape(rows, -1)
        elif tail:
            head[full, row:row + rows, :, :tail] = shaped[:, :, full * lanes:]
        row += rows
    return packed if dense else head


def pack_bias(bias: np.ndarray, blocks: int, hidden: int, lanes: int,
              dense_tail: bool = False, vector: int | None = None) -> np.ndarray:
    """``bias`` ``(blocks·H,)`` as ``(tiles, blocks, lanes)``, the panels' order (with
    ``dense_tail``, the last tile's as :func:`pack_panels` packs it)."""
    return pack_panels(bias.reshape(1, -1), blocks, hidden, lanes, dense_tail, vector)
