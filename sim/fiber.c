/**
 * \file fiber.c
 * \brief Fibers: cooperative flows of control with their own stacks, one per simulated GPU thread.
 *
 * A fiber is a stack plus a saved stack pointer. Switching from fiber A to
 * fiber B pushes A's callee-saved registers on A's stack, stores A's stack
 * pointer, loads B's and pops B's registers: about twenty instructions,
 * against ~190 ns for glibc's swapcontext, which also makes a signal-mask
 * system call. On x86-64 the switch is the few lines of assembly below; on
 * other architectures the portable ucontext functions are used instead.
 *
 * A new fiber's stack is laid out as if it had been switched away from just
 * before calling its entry function, so the first switch "returns" into it.
 *
 * Stacks come from a per-OS-thread pool of mmap'ed regions, each with an
 * inaccessible guard page below it so that a stack overflow faults instead
 * of silently overwriting a neighbour. Their size is SIM_STACK_KB (default
 * 128 KB); pages are only committed when touched.
 *
 * AddressSanitizer tracks the current stack; it must be told about every
 * switch (__sanitizer_start_switch_fiber before, __sanitizer_finish_switch_fiber
 * after), which the functions here do when the library is built with ASan.
 */
#include "sim_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIM_ASAN 1
#endif
#endif

#ifdef SIM_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifndef __x86_64__
#include <ucontext.h>
#endif

static unsigned long long switches;

unsigned long long sim_fiber_switches(void)
{
    return switches;
}

/* ------------------------------------------------------------------------------------------ */
/* the stack pool                                                                              */

/** Stacks of the calling OS thread, reused by every block it runs. */
typedef struct {
    char **stacks; /**< lowest usable address of each stack */
    int count;     /**< stacks mapped */
    size_t size;   /**< usable bytes per stack */
} StackPool;

static _Thread_local StackPool pool;

void *sim_stack_get(int index, size_t *size)
{
    if (!pool.size) {
        long kb = sim_env_long("SIM_STACK_KB", 128);
        pool.size = (size_t)(kb < 16 ? 16 : kb) * 1024;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    while (index >= pool.count) {
        char **grown = realloc(pool.stacks, (size_t)(pool.count + 1) * sizeof *grown);
        if (!grown) {
            fprintf(stderr, "sim: out of memory for fiber stacks\n");
            abort();
        }
        pool.stacks = grown;
        char *region =
            mmap(NULL, pool.size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (region == MAP_FAILED || mprotect(region, page, PROT_NONE) != 0) {
            fprintf(stderr, "sim: cannot map a %zu-byte fiber stack\n", pool.size);
            abort();
        }
        pool.stacks[pool.count++] = region + page;
    }
    *size = pool.size;
#ifdef SIM_ASAN
    /* An abandoned fiber (a block that failed) may have left poisoned frames behind. */
    __asan_unpoison_memory_region(pool.stacks[index], pool.size);
#endif
    return pool.stacks[index];
}

/* ------------------------------------------------------------------------------------------ */
/* AddressSanitizer bookkeeping                                                                */

/** Tells ASan that the stack is about to become to's (from_exits: from will never run again). */
static void asan_before(SimFiber *from, SimFiber *to, int from_exits)
{
#ifdef SIM_ASAN
    __sanitizer_start_switch_fiber(from_exits ? NULL : &from->asan_fake_stack, to->stack ? to->stack : to->asan_bottom,
                                   to->stack ? to->stack_size : to->asan_size);
#else
    (void)from, (void)to, (void)from_exits;
#endif
}

/** Tells ASan that the switch back into f has completed. */
static void asan_after(SimFiber *f)
{
#ifdef SIM_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake_stack, NULL, NULL);
#else
    (void)f;
#endif
}

void sim_fiber_started(SimFiber *to_return_to)
{
#ifdef SIM_ASAN
    /* The switcher runs on the OS thread's stack, whose bounds ASan reports here. */
    __sanitizer_finish_switch_fiber(NULL, &to_return_to->asan_bottom, &to_return_to->asan_size);
#else
    (void)to_return_to;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* the switch                                                                                  */

#ifdef __x86_64__
/*
 * void sim_fiber_swap(void **save_sp, void *load_sp)
 * Pushes the System V callee-saved registers (rbp, rbx, r12–r15) and the
 * floating-point control words (MXCSR, x87 CW), saves rsp into *save_sp,
 * switches rsp to load_sp, and pops the same in reverse; `ret` then resumes
 * the other fiber where it called sim_fiber_swap (or at its entry function).
 */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl sim_fiber_swap\n"
        ".hidden sim_fiber_swap\n"
        ".type sim_fiber_swap, @function\n"
        "sim_fiber_swap:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    subq $8, %rsp\n"
        "    stmxcsr (%rsp)\n"
        "    fnstcw 4(%rsp)\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    ldmxcsr (%rsp)\n"
        "    fldcw 4(%rsp)\n"
        "    addq $8, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size sim_fiber_swap, .-sim_fiber_swap\n");

void sim_fiber_swap(void **save_sp, void *load_sp);

void sim_fiber_prepare(SimFiber *f, void *stack, size_t size, void (*entry)(void))
{
    uint64_t *sp = (uint64_t *)(((uintptr_t)stack + size) & ~(uintptr_t)15);
    *--sp = 0;                             /* entry's return address: it never returns */
    *--sp = (uint64_t)(uintptr_t)entry;    /* where `ret` goes on the first switch */
    for (int i = 0; i < 6; i++) *--sp = 0; /* rbp, rbx, r12–r15 */
    *--sp = 0x1f80u | (0x037full << 32);   /* default MXCSR and x87 control word */
    f->sp = sp;
    f->stack = stack;
    f->stack_size = size;
    f->asan_fake_stack = NULL;
}

void sim_fiber_switch(SimFiber *from, SimFiber *to)
{
    switches++;
    asan_before(from, to, 0);
    sim_fiber_swap(&from->sp, to->sp);
    asan_after(from);
}

void sim_fiber_exit(SimFiber *from, SimFiber *to)
{
    switches++;
    asan_before(from, to, 1);
    sim_fiber_swap(&from->sp, to->sp);
}

#else /* portable fallback: ucontext */

/** Returns f's ucontext, allocating it on first use. */
static ucontext_t *context_of(SimFiber *f)
{
    if (!f->context && !(f->context = calloc(1, sizeof(ucontext_t)))) {
        fprintf(stderr, "sim: out of memory for a fiber context\n");
        abort();
    }
    return f->context;
}

void sim_fiber_prepare(SimFiber *f, void *stack, size_t size, void (*entry)(void))
{
    ucontext_t *uc = context_of(f);
    getcontext(uc);
    uc->uc_stack.ss_sp = stack;
    uc->uc_stack.ss_size = size;
    uc->uc_link = NULL;
    makecontext(uc, entry, 0);
    f->stack = stack;
    f->stack_size = size;
    f->asan_fake_stack = NULL;
}

void sim_fiber_switch(SimFiber *from, SimFiber *to)
{
    switches++;
    asan_before(from, to, 0);
    swapcontext(context_of(from), context_of(to));
    asan_after(from);
}

void sim_fiber_exit(SimFiber *from, SimFiber *to)
{
    switches++;
    asan_before(from, to, 1);
    swapcontext(context_of(from), context_of(to));
}
#endif
