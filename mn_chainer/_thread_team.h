/*
 * The threads that run the passes of the kernels (_cpu_kernels.c).
 *
 * A kernel's pass is a task, task(frame, thread), that every thread of the
 * pass runs: it takes chunks of rows (MN_EACH_CHUNK) until none is left,
 * thread only choosing its scratch buffer.  mn_team_run(task, frame,
 * threads) runs it on the calling thread (thread 0) and threads - 1
 * workers, and returns when all are done.
 *
 * The workers are started on first need and kept.  After a pass a worker
 * waits for the next one spinning for MN_TEAM_SPIN_NS, then asleep on a
 * condition variable: the passes of a fit follow one another within tens
 * of microseconds and find their workers awake, where a worker put to
 * sleep costs 0.05 to 0.4 ms to wake (measured on a 2-core virtual
 * machine, whose idle cores halt), as much as a pass over 4,096 points.
 *
 * Each worker has a mailbox (its own cache line) that only the pass that
 * needs it writes, then bumps its generation: a worker never reads a
 * task that is not its own.  The calling thread counts the workers done
 * and spins while they run.  One pass runs at a time: a thread that calls
 * while another's pass runs does its pass alone.  A forked child starts
 * with no workers (pthread_atfork).  Without POSIX threads every pass
 * runs on the calling thread.
 */
#include <stdint.h>

typedef void (*mn_task)(void *frame, int64_t thread);

/*
 * Chunk c of a pass is the rows [bounds[c], bounds[c + 1]) of n_chunks,
 * f->next the next chunk to take (zero before the pass), for a frame f
 * that has the fields MN_CHUNK_FIELDS.  Each chunk's sums go to buffers of
 * its own, which the caller adds in chunk order: the results depend on the
 * chunks (mn_chainer/cpu_kernels.py cuts them by the pass's work), never
 * on the threads or their timing.
 */
#define MN_CHUNK_FIELDS \
    const int64_t *bounds; \
    int64_t n_chunks; \
    int64_t next
#define MN_EACH_CHUNK(c, f) \
    for (int64_t c; (c = __atomic_fetch_add(&(f)->next, 1, \
                                            __ATOMIC_RELAXED)) \
                    < (f)->n_chunks;)

#if defined(__unix__) && defined(__GNUC__)
#include <pthread.h>
#include <sched.h>
#include <time.h>

/* How long an idle worker spins before it sleeps (nanoseconds). */
#define MN_TEAM_SPIN_NS 200000
/* The most workers. */
#define MN_TEAM_MAX 255

typedef struct {
    mn_task task;
    void *frame;
    uint64_t generation;  /* bumped by each pass that posts to it */
} __attribute__((aligned(64))) mn_mailbox;  /* a cache line each */

static struct {
    pthread_mutex_t run;   /* held by the thread whose pass runs */
    pthread_mutex_t lock;  /* guards the sleep of the workers */
    pthread_cond_t wake;
    int64_t workers;       /* started: threads 1 .. workers */
    int64_t sleepers;      /* workers asleep, or about to be */
    int64_t done;          /* workers done with the pass */
    int at_fork_set;       /* mn_team_after_fork registered */
    mn_mailbox mail[MN_TEAM_MAX + 1];
} mn_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
             PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, {{0}}};

static int64_t mn_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void mn_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until the generation of box differs from seen, and returns it. */
static uint64_t mn_team_wait(mn_mailbox *box, uint64_t seen)
{
    uint64_t g;
    const int64_t until = mn_now_ns() + MN_TEAM_SPIN_NS;
    for (int spin = 1;; ++spin) {
        if ((g = __atomic_load_n(&box->generation, __ATOMIC_ACQUIRE)) != seen)
            return g;
        mn_pause();
        if (spin % 64 == 0 && mn_now_ns() > until)
            break;
    }
    /* The posting thread bumps the generation, then reads sleepers; this
     * one counts itself in sleepers, then reads the generation (both
     * sequentially consistent): one of them sees the other's write, so a
     * pass never waits for a sleeping worker that nobody wakes. */
    pthread_mutex_lock(&mn_team.lock);
    __atomic_fetch_add(&mn_team.sleepers, 1, __ATOMIC_SEQ_CST);
    while ((g = __atomic_load_n(&box->generation, __ATOMIC_SEQ_CST)) == seen)
        pthread_cond_wait(&mn_team.wake, &mn_team.lock);
    __atomic_fetch_sub(&mn_team.sleepers, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&mn_team.lock);
    return g;
}

static void *mn_team_worker(void *arg)
{
    const int64_t thread = (int64_t)(intptr_t)arg;
    mn_mailbox *box = &mn_team.mail[thread];
    uint64_t seen = 0;  /* a new worker's mailbox is at generation 0 */
    for (;;) {
        seen = mn_team_wait(box, seen);
        box->task(box->frame, thread);
        __atomic_fetch_add(&mn_team.done, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* In a forked child: no workers (the parent's were not copied). */
static void mn_team_after_fork(void)
{
    pthread_mutex_init(&mn_team.run, NULL);
    pthread_mutex_init(&mn_team.lock, NULL);
    pthread_cond_init(&mn_team.wake, NULL);
    mn_team.workers = mn_team.sleepers = mn_team.done = 0;
    for (int64_t i = 0; i <= MN_TEAM_MAX; ++i)
        mn_team.mail[i].generation = 0;
}

/* Starts workers up to thread `threads - 1`; returns the threads there
 * are (fewer where a thread could not be started).  Holds mn_team.run. */
static int64_t mn_team_start(int64_t threads)
{
    if (!mn_team.at_fork_set) {
        pthread_atfork(NULL, NULL, mn_team_after_fork);
        mn_team.at_fork_set = 1;
    }
    while (mn_team.workers < threads - 1) {
        const int64_t thread = mn_team.workers + 1;
        pthread_attr_t attr;
        pthread_t id;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        mn_team.mail[thread].generation = 0;
        const int failed = pthread_create(&id, &attr, mn_team_worker,
                                          (void *)(intptr_t)thread);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        mn_team.workers = thread;
    }
    return mn_team.workers + 1 < threads ? mn_team.workers + 1 : threads;
}

static void mn_team_run(mn_task task, void *frame, int64_t threads)
{
    if (threads > MN_TEAM_MAX + 1)
        threads = MN_TEAM_MAX + 1;
    if (threads <= 1 || pthread_mutex_trylock(&mn_team.run) != 0) {
        task(frame, 0);
        return;
    }
    threads = mn_team_start(threads);
    __atomic_store_n(&mn_team.done, 0, __ATOMIC_RELAXED);
    for (int64_t t = 1; t < threads; ++t) {
        mn_mailbox *box = &mn_team.mail[t];
        box->task = task;
        box->frame = frame;
        __atomic_fetch_add(&box->generation, 1, __ATOMIC_SEQ_CST);
    }
    if (threads > 1 && __atomic_load_n(&mn_team.sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&mn_team.lock);
        pthread_cond_broadcast(&mn_team.wake);
        pthread_mutex_unlock(&mn_team.lock);
    }
    task(frame, 0);
    for (int spin = 1;
         __atomic_load_n(&mn_team.done, __ATOMIC_ACQUIRE) < threads - 1;
         ++spin) {
        if (spin < 4096)
            mn_pause();
        else
            sched_yield();  /* a worker may share this core */
    }
    pthread_mutex_unlock(&mn_team.run);
}

#else  /* no POSIX threads: every pass on the calling thread */

static void mn_team_run(mn_task task, void *frame, int64_t threads)
{
    (void)threads;
    task(frame, 0);
}

#endif
