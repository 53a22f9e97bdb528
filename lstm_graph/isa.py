"""The instruction sets of the CPU a benchmark runs on, and running as on one without AVX-512.

:func:`cpu` names the CPU and the vector extensions a benchmark table's header lists.
``python -m lstm_graph.bench --isa avx2`` measures every contender as on a CPU without
AVX-512 (the AMD EPYC machines of Zen 2 and 3, for one) on a CPU that has it: inside
:func:`avx512_hidden`, the environment that the contenders' processes inherit preloads
a small library (:data:`HIDE_AVX512`, built on entry) that answers the CPUID
instruction without AVX-512, so that the peers' libraries pick their AVX2 kernels;
adds ``-mno-avx512f`` to ``$LSTM_GRAPH_CFLAGS``, so that ours is built for AVX2; and
sets :data:`HIDDEN_ENV`, which the table's header reads. :func:`hiding_unavailable`
says why that cannot run where it cannot.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from lstm_graph.executors.buildcache import (
    compiler,
    compiler_environment,
    private_directory,
)
from lstm_graph.executors.native import CFLAGS_ENV

#: CPU features worth naming in a table header, in this order.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and the vector extensions it has (from /proc/cpuinfo)."""
    model, flags = cpuinfo()
    return model, [f for f in VECTOR_FLAGS if f in flags]


def cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and every flag /proc/cpuinfo gives it (none where unreadable).
    Where the name holds no number (a virtual machine's "AMD EPYC"), the family and model
    numbers follow it, which tell the generation: ``AMD EPYC (family 25, model 17)``."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    numbers: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key in ("cpu family", "model") and key not in numbers:
                numbers[key] = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    if not any(c.isdigit() for c in model) and len(numbers) == 2:
        model += f" (family {numbers['cpu family']}, model {numbers['model']})"
    return model, flags


#: Set (to 1) in the contenders' environment by ``--isa avx2``: every contender sees the CPU
#: without AVX-512 (:data:`HIDE_AVX512`).
HIDDEN_ENV = "LSTM_GRAPH_BENCH_HIDE_AVX512"
#: C for a library preloaded (``LD_PRELOAD``) into each contender's Python process by
#: ``--isa avx2``: it makes the CPUID instruction fault (Linux's ``ARCH_SET_CPUID``, where
#: the CPU and kernel offer CPUID faulting) and answers it as the CPU would, less the
#: AVX-512 features and their register state, so that every library that picks its
#: kernels by CPUID (onnxruntime's MLAS, PyTorch's oneDNN and cpuinfo, OpenBLAS, MKL)
#: runs its AVX2 ones, as on a CPU without AVX-512; ours is built with ``-mno-avx512f``
#: (``$LSTM_GRAPH_CFLAGS``). Only in a process whose program is Python: others (the C
#: compiler's, which catch SIGSEGV themselves) are left as they are.
HIDE_AVX512 = r"""
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static void answer(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {  /* AVX512F, DQ, IFMA, PF, ER, CD, BW, VL; VBMI, VBMI2,
                                     VNNI, BITALG, VPOPCNTDQ; 4VNNIW, 4FMAPS, VP2INTERSECT,
                                     FP16 */
        r[1] &= ~(1u << 16 | 1u << 17 | 1u << 21 | 1u << 26 | 1u << 27 | 1u << 28 | 1u << 30
                  | 1u << 31);
        r[2] &= ~(1u << 1 | 1u << 6 | 1u << 11 | 1u << 12 | 1u << 14);
        r[3] &= ~(1u << 2 | 1u << 3 | 1u << 8 | 1u << 23);
    }
    if (leaf == 7 && sub == 1) r[0] &= ~(1u << 5);  /* AVX512_BF16 */
    if (leaf == 0xD && sub == 0) r[0] &= ~0xE0u;  /* no opmask or ZMM state to save */
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    greg_t *g = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *at = (const uint8_t *)g[REG_RIP];
    (void)info;
    if (at[0] != 0x0F || at[1] != 0xA2) {  /* a fault of another kind: as without us */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t r[4];
    answer((uint32_t)g[REG_RAX], (uint32_t)g[REG_RCX], r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide(void) {
    char program[4096];
    const ssize_t n = readlink("/proc/self/exe", program, sizeof program - 1);
    if (n <= 0) return;
    program[n] = 0;
    const char *base = strrchr(program, '/');
    if (!strstr(base ? base + 1 : program, "python")) return;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}
"""


def hiding_unavailable() -> str | None:
    """Why ``--isa avx2`` cannot run here (None where it can)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return "it needs Linux on x86-64"
    if "avx512f" not in cpu()[1]:
        return "this CPU has no AVX-512 to hide: a plain run already uses AVX2"
    if "cpuid_fault" not in cpuinfo()[1]:
        return "this CPU or kernel offers no CPUID faulting (no 'cpuid_fault' in /proc/cpuinfo)"
    if compiler() is None:
        return "no C compiler was found to build the preloaded library"
    return None


@contextlib.contextmanager
def avx512_hidden() -> Iterator[None]:
    """This process's environment, while inside, makes every contender run as on a CPU
    without AVX-512 (:data:`HIDE_AVX512`; the library built in a private temporary
    folder in a temporary directory no other user can change, removed at exit: the
    contenders load it by its path)."""
    cc = compiler()
    assert cc is not None
    saved = {name: os.environ.get(name) for name in ("LD_PRELOAD", CFLAGS_ENV, HIDDEN_ENV)}
    folder = private_directory()
    source, library = folder / "hide_avx512.c", folder / "hide_avx512.so"
    source.write_text(HIDE_AVX512)
    built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)],
                           capture_output=True, text=True, check=False,
                           env=compiler_environment())
    if built.returncode != 0:
        raise RuntimeError(f"building the library that hides AVX-512 failed:\n{built.stderr}")
    os.environ["LD_PRELOAD"] = " ".join(filter(None, [str(library), saved["LD_PRELOAD"]]))
    os.environ[CFLAGS_ENV] = " ".join(filter(None, [saved[CFLAGS_ENV], "-mno-avx512f"]))
    os.environ[HIDDEN_ENV] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
