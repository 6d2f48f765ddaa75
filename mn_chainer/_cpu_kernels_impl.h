/*
 * The CPU kernels of mn_chainer/_cpu_kernels.c for one floating type.
 *
 * Included once per type with REAL (float or double), NAME(n) (the
 * function name with a type suffix), EXP, LOG and MN_FUSED_FORMS defined.
 * A pass over a C-contiguous (m, d) point matrix is a function of the
 * rows [r0, r1) (NAME(mn_..._rows)), a task that runs it on the chunks of
 * rows that its thread takes (MN_EACH_CHUNK of _thread_team.h), each chunk
 * with its own output sums, and the exported kernel that runs the task on
 * the caller's number of threads (mn_chainer/cpu_kernels.py chooses it).  Their
 * NumPy twins are the passes of mn_chainer/fit_passes.py (ArrayPasses);
 * the tests compare them, and both with float64 references.
 *
 * Accuracy, as the NumPy path's (mn_chainer/mixture_steps.py):
 * - sums over the rows are made in double: directly in the passes that
 *   mostly read (column and cluster sums), and in the E+M pass through
 *   REAL partial sums over at most MN_FLUSH_ROWS rows, added to double
 *   totals;
 * - float (MN_FUSED_FORMS 0): the E-step takes direct differences,
 *   prec (x - mu)^2, never the expanded quadratic
 *   x^2 prec - 2 x mu prec + mu^2 prec, which cancels where a precision is
 *   large (a channel whose component variance is reg_covar, as rectified
 *   activations give); the M-step sums r (x - mu_k) and r (x - mu_k)^2
 *   about the means mu_k of the E-step's mixture, so that E[x^2] - mu^2
 *   never cancels in a tight component;
 * - double (MN_FUSED_FORMS 1): the forms that cost two operations where
 *   the float ones cost three and four, whose rounding stays far below
 *   what a float64 fit resolves: the E-step's scaled difference
 *   v = x sqrt(prec) - mu sqrt(prec) is one fused multiply-add (error
 *   2^-53 |mu| sqrt(prec), against |x - mu| sqrt(prec) ~ 1), and the
 *   M-step sums r x and r x^2 about the frame's origin (the centre of the
 *   points), as the NumPy passes do (E[x^2] - mu^2 loses 2^-53 mu^2, not
 *   measurable against reg_covar for centred points).
 *
 * The E-step and the M-step run on tiles of MN_TILE = 4 rows, copied
 * (centred) into per-thread scratch rows padded with zeros to whole
 * vectors of MN_VECTOR_BYTES, with the mixture's coefficients padded
 * alike (zero coefficients: the padding adds nothing): every inner loop
 * runs whole, aligned vectors, every mean and coefficient loaded serves
 * four points, and the running sums of a tile's rows are independent, so
 * that the loops run at the rate of the arithmetic.
 */

/* REAL values per vector, and d rounded up to whole vectors. */
#define LANES ((int64_t)(MN_VECTOR_BYTES / sizeof(REAL)))
#define PADDED(d) (((d) + LANES - 1) / LANES * LANES)

/*
 * The squared distances of the rows x0..x3 (d values each) to c into
 * a[0..3]: direct differences, four independent running sums.
 */
static inline __attribute__((always_inline)) void NAME(mn_four_d2)(
    const REAL *x0, const REAL *x1, const REAL *x2, const REAL *x3,
    const REAL *c, int64_t d, REAL *a)
{
    REAL a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+:a0, a1, a2, a3)
    for (int64_t j = 0; j < d; ++j) {
        const REAL v0 = x0[j] - c[j], v1 = x1[j] - c[j];
        const REAL v2 = x2[j] - c[j], v3 = x3[j] - c[j];
        a0 += v0 * v0;
        a1 += v1 * v1;
        a2 += v2 * v2;
        a3 += v3 * v3;
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/*
 * sums[j] += sum of points[i, j] over the rows (the column sums, in
 * double), amax[j] the running maximum of |points[i, j]|, and, if first is
 * not NULL, d2[i] = |points[i] - first|^2 (K-means++'s distances to its
 * first centre, in the same pass).  Four rows at a time (n = 4; the last
 * ones one by one, n = 1): the running sums and maxima are loaded and
 * stored once per four rows, and the four distances are independent
 * running sums.
 */
static inline __attribute__((always_inline)) void NAME(mn_column_rows)(
    const REAL *points, const REAL *first, double *sums, REAL *amax,
    REAL *d2, int64_t d, int64_t r0, int64_t r1)
{
    int64_t n;
    for (int64_t i = r0; i < r1; i += n) {
        n = r1 - i >= 4 ? 4 : 1;
        const REAL *p0 = points + i * d;
        /* With n = 1 the four rows are the same row, counted once. */
        const REAL *p1 = n == 4 ? p0 + d : p0, *p2 = n == 4 ? p1 + d : p0;
        const REAL *p3 = n == 4 ? p2 + d : p0;
        if (n == 4) {
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                const REAL v0 = p0[j] < 0 ? -p0[j] : p0[j];
                const REAL v1 = p1[j] < 0 ? -p1[j] : p1[j];
                const REAL v2 = p2[j] < 0 ? -p2[j] : p2[j];
                const REAL v3 = p3[j] < 0 ? -p3[j] : p3[j];
                const REAL v01 = v0 > v1 ? v0 : v1, v23 = v2 > v3 ? v2 : v3;
                const REAL v = v01 > v23 ? v01 : v23;
                sums[j] += ((double)p0[j] + (double)p1[j])
                           + ((double)p2[j] + (double)p3[j]);
                amax[j] = v > amax[j] ? v : amax[j];
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                const REAL v = p0[j] < 0 ? -p0[j] : p0[j];
                sums[j] += p0[j];
                amax[j] = v > amax[j] ? v : amax[j];
            }
        }
        if (first == NULL)
            continue;
        REAL a[4];
        NAME(mn_four_d2)(p0, p1, p2, p3, first, d, a);
        for (int64_t t = 0; t < n; ++t)
            d2[i + t] = a[t];
    }
}

/*
 * The column pass: NAME(mn_column_rows) of every chunk c, its sums and
 * maxima at sums + c * sums_stride and amax + c * amax_stride, on
 * `threads` threads.
 */
typedef struct {
    const REAL *points, *first;
    double *sums;
    int64_t sums_stride;
    REAL *amax;
    int64_t amax_stride;
    REAL *d2;
    int64_t d;
    MN_CHUNK_FIELDS;
} NAME(mn_column_frame);

MN_CLONES
static void NAME(mn_column_task)(void *frame, int64_t thread)
{
    NAME(mn_column_frame) *f = frame;
    (void)thread;
    MN_EACH_CHUNK(c, f)
        NAME(mn_column_rows)(f->points, f->first, f->sums + c * f->sums_stride,
                             f->amax + c * f->amax_stride, f->d2, f->d,
                             f->bounds[c], f->bounds[c + 1]);
}

void NAME(mn_column_sums)(const REAL *points, const REAL *first,
                          double *sums, int64_t sums_stride, REAL *amax,
                          int64_t amax_stride, REAL *d2, int64_t d,
                          const int64_t *bounds, int64_t n_chunks,
                          int64_t threads)
{
    NAME(mn_column_frame) f = {points, first, sums, sums_stride, amax,
                               amax_stride, d2, d, bounds, n_chunks, 0};
    mn_team_run(NAME(mn_column_task), &f, threads);
}

/*
 * K-means++ (the seeding state of mn_chainer/cpu_kernels.py, Seeding; its
 * NumPy twin is mn_chainer/mixture_steps.py, Seeding) keeps, for every
 * row, closest[i] (the squared distance to the nearest chosen centre),
 * labels[i] (the index of that centre) and cum[i], the cumulative sum of
 * closest up to row i (in double).  A round draws t candidates
 * (NAME(mn_seed_draw), serial), measures them (NAME(mn_candidate_d2), by
 * chunks of rows) and keeps the best (NAME(mn_seed_keep), serial).
 *
 * The candidates of a round: index[q] = the first row i with cum[i] >=
 * u[q] * cum[m - 1] (at most m - 1; u in [0, 1): row i is drawn with
 * probability closest[i] / cum[m - 1]), its row copied into cand (t, d).
 */
void NAME(mn_seed_draw)(const REAL *points, const double *cum,
                        const double *u, int64_t *index, REAL *cand,
                        int64_t m, int64_t d, int64_t t)
{
    for (int64_t q = 0; q < t; ++q) {
        const double target = u[q] * cum[m - 1];
        int64_t lo = 0, hi = m;  /* the first i in [lo, hi) with cum >= */
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (cum[mid] < target)
                lo = mid + 1;
            else
                hi = mid;
        }
        index[q] = lo < m ? lo : m - 1;
        for (int64_t j = 0; j < d; ++j)
            cand[q * d + j] = points[index[q] * d + j];
    }
}

/*
 * The distances of the candidates to the n rows from row i (n = 4, or 1:
 * then the four rows of NAME(mn_four_d2) are that row), as
 * NAME(mn_candidate_rows) defines them.
 */
static inline __attribute__((always_inline)) void NAME(mn_candidate_tile)(
    const REAL *x, const REAL *cand, const REAL *closest, REAL *out,
    double *potential, int64_t m, int64_t d, int64_t t, int64_t i,
    int64_t n)
{
    const REAL *x0 = x + i * d;
    const REAL *x1 = n == 4 ? x0 + d : x0, *x2 = n == 4 ? x1 + d : x0;
    const REAL *x3 = n == 4 ? x2 + d : x0;
    for (int64_t q = 0; q < t; ++q) {
        REAL a[4];
        NAME(mn_four_d2)(x0, x1, x2, x3, cand + q * d, d, a);
        REAL *o = out + q * m + i;
        double total = 0;
        for (int64_t u = 0; u < n; ++u) {
            o[u] = a[u] < closest[i + u] ? a[u] : closest[i + u];
            total += (double)o[u];
        }
        potential[q] += total;
    }
}

/*
 * The distances of a round: out[q, i] = min(closest[i], |x_i - cand_q|^2)
 * (direct differences, never negative; out has shape (t, m)) and
 * potential[q] = the sum of out[q, i] over the rows [r0, r1), in double
 * (their part of the potential if candidate q is added).  Four rows at a
 * time (NAME(mn_candidate_tile)).
 */
static inline __attribute__((always_inline)) void NAME(mn_candidate_rows)(
    const REAL *x, const REAL *cand, const REAL *closest, REAL *out,
    double *potential, int64_t m, int64_t d, int64_t t, int64_t r0,
    int64_t r1)
{
    for (int64_t q = 0; q < t; ++q)
        potential[q] = 0;
    int64_t i = r0;
    for (; i + 4 <= r1; i += 4)
        NAME(mn_candidate_tile)(x, cand, closest, out, potential, m, d, t, i,
                                4);
    for (; i < r1; ++i)  /* the last rows one by one */
        NAME(mn_candidate_tile)(x, cand, closest, out, potential, m, d, t, i,
                                1);
}

/*
 * The distances of a round: NAME(mn_candidate_rows) of every chunk c, its
 * potentials at potential + c * stride, on `threads` threads.
 */
typedef struct {
    const REAL *x, *cand, *closest;
    REAL *out;
    double *potential;
    int64_t stride, m, d, t;
    MN_CHUNK_FIELDS;
} NAME(mn_candidate_frame);

MN_CLONES
static void NAME(mn_candidate_task)(void *frame, int64_t thread)
{
    NAME(mn_candidate_frame) *f = frame;
    (void)thread;
    MN_EACH_CHUNK(c, f)
        NAME(mn_candidate_rows)(f->x, f->cand, f->closest, f->out,
                                f->potential + c * f->stride, f->m, f->d,
                                f->t, f->bounds[c], f->bounds[c + 1]);
}

void NAME(mn_candidate_d2)(const REAL *x, const REAL *cand,
                           const REAL *closest, REAL *out,
                           double *potential, int64_t stride, int64_t m,
                           int64_t d, int64_t t, const int64_t *bounds,
                           int64_t n_chunks, int64_t threads)
{
    NAME(mn_candidate_frame) f = {x, cand, closest, out, potential, stride,
                                  m, d, t, bounds, n_chunks, 0};
    mn_team_run(NAME(mn_candidate_task), &f, threads);
}

/*
 * Keeps the best candidate of round c, the one of lowest potential (the
 * sum over the n_parts chunks of rows of potentials[p * stride + q], in
 * chunk order; the first on a tie), and returns its q: labels[i] = c where out[q, i] <
 * closest[i], closest[i] = out[q, i].  With out NULL (before the first
 * round) closest is kept as it is and -1 returned.  Either way cum is
 * made the cumulative sum of closest, in double.
 */
int64_t NAME(mn_seed_keep)(const REAL *out, const double *potentials,
                           int64_t n_parts, int64_t stride, int64_t t,
                           REAL *closest, int64_t *labels, double *cum,
                           int64_t m, int64_t c)
{
    int64_t best = -1;
    if (out != NULL) {
        double lowest = 0;
        for (int64_t q = 0; q < t; ++q) {
            double potential = 0;
            for (int64_t p = 0; p < n_parts; ++p)
                potential += potentials[p * stride + q];
            if (best < 0 || potential < lowest) {
                best = q;
                lowest = potential;
            }
        }
        const REAL *kept = out + best * m;
        for (int64_t i = 0; i < m; ++i) {
            labels[i] = kept[i] < closest[i] ? c : labels[i];
            closest[i] = kept[i];
        }
    }
    double total = 0;
    for (int64_t i = 0; i < m; ++i) {
        total += closest[i];
        cum[i] = total;
    }
    return best;
}

/*
 * M-step sums of hard clusters of the centred points x = points - shift,
 * in double: counts[k] += #{i: labels[i] = k}, sums[k, :d] += sum x_i and
 * sums[k, d:] += sum x_i^2 over the cluster (x_i and its square exact for
 * float points).  labels must lie in [0, K) (checked by the caller).
 */
static inline __attribute__((always_inline)) void NAME(mn_cluster_rows)(
    const REAL *points, const REAL *shift, const int64_t *labels,
    double *sums, double *counts, int64_t d, int64_t r0, int64_t r1)
{
    for (int64_t i = r0; i < r1; ++i) {
        const REAL *p = points + i * d;
        const int64_t k = labels[i];
        double *s1 = sums + k * 2 * d;
        double *s2 = s1 + d;
        counts[k] += 1;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
            const double v = (double)p[j] - (double)shift[j];
            s1[j] += v;
            s2[j] += v * v;
        }
    }
}

/*
 * The clusters' sums: NAME(mn_cluster_rows) of every chunk c, its sums at
 * sums + c * sums_stride and counts + c * counts_stride, on `threads`
 * threads.
 */
typedef struct {
    const REAL *points, *shift;
    const int64_t *labels;
    double *sums;
    int64_t sums_stride;
    double *counts;
    int64_t counts_stride, d;
    MN_CHUNK_FIELDS;
} NAME(mn_cluster_frame);

MN_CLONES
static void NAME(mn_cluster_task)(void *frame, int64_t thread)
{
    NAME(mn_cluster_frame) *f = frame;
    (void)thread;
    MN_EACH_CHUNK(c, f)
        NAME(mn_cluster_rows)(f->points, f->shift, f->labels,
                              f->sums + c * f->sums_stride,
                              f->counts + c * f->counts_stride, f->d,
                              f->bounds[c], f->bounds[c + 1]);
}

void NAME(mn_cluster_sums)(const REAL *points, const REAL *shift,
                           const int64_t *labels, double *sums,
                           int64_t sums_stride, double *counts,
                           int64_t counts_stride, int64_t d,
                           const int64_t *bounds, int64_t n_chunks,
                           int64_t threads)
{
    NAME(mn_cluster_frame) f = {points, shift, labels, sums, sums_stride,
                                counts, counts_stride, d, bounds, n_chunks,
                                0};
    mn_team_run(NAME(mn_cluster_task), &f, threads);
}

/*
 * The per-thread scratch of the E-step kernels (mn_em_sums, mn_log_resp),
 * carved from the caller's buffer of NAME(mn_scratch_size)(d, K) values,
 * every array starting on a vector boundary; dp = PADDED(d):
 *   x (MN_TILE, dp): the tile's centred rows (zero rows past the last);
 *   a, b (K, dp): the E-step's coefficients (zero past d), see
 *     NAME(mn_log_prob_tile);
 *   lp (MN_TILE, K): the tile's log-densities, then responsibilities;
 *   part (K, 2, dp), part_nk (K): the M-step's partial sums.
 */
typedef struct {
    int64_t dp;
    REAL *x, *a, *b, *lp, *part, *part_nk;
    REAL floor_, exp_floor;  /* the tiny-value rule: NAME(mn_row_exp) */
} NAME(mn_tile_scratch);

int64_t NAME(mn_scratch_size)(int64_t d, int64_t k_total)
{
    const int64_t dp = PADDED(d);
    /* The arrays, each rounded up to whole vectors, and the alignment. */
    return MN_TILE * dp + 2 * k_total * dp
           + PADDED(MN_TILE * k_total) + 2 * k_total * dp
           + PADDED(k_total) + LANES;
}

/*
 * Carves the scratch (see above), copies the coefficients a, b (K, d)
 * into its padded rows and keeps the tiny-value floor floor_ with
 * EXP(floor_).
 */
static inline __attribute__((always_inline)) NAME(mn_tile_scratch)
NAME(mn_carve_scratch)(REAL *scratch, const REAL *a, const REAL *b,
                       int64_t d, int64_t k_total, REAL floor_)
{
    NAME(mn_tile_scratch) s;
    const int64_t dp = PADDED(d);
    const uintptr_t align = MN_VECTOR_BYTES;
    REAL *p = (REAL *)(((uintptr_t)scratch + align - 1) & ~(align - 1));
    s.dp = dp;
    s.floor_ = floor_;
    s.exp_floor = EXP(floor_);
    s.x = p;
    s.a = s.x + MN_TILE * dp;
    s.b = s.a + k_total * dp;
    s.lp = s.b + k_total * dp;
    s.part = s.lp + PADDED(MN_TILE * k_total);
    s.part_nk = s.part + 2 * k_total * dp;
    for (int64_t k = 0; k < k_total; ++k) {
        for (int64_t j = 0; j < dp; ++j) {
            s.a[k * dp + j] = j < d ? a[k * d + j] : 0;
            s.b[k * dp + j] = j < d ? b[k * d + j] : 0;
        }
    }
    for (int64_t e = 0; e < MN_TILE * dp; ++e)
        s.x[e] = 0;
    for (int64_t e = 0; e < 2 * k_total * dp + k_total; ++e)
        s.part[e] = 0;  /* part and part_nk */
    return s;
}

/*
 * The tile of centred rows starting at row i, x_t = points[i + t] - shift,
 * into s->x; rows past r1 are zero.  Returns the number of real rows.
 */
static inline __attribute__((always_inline)) int64_t NAME(mn_tile_rows)(
    const REAL *points, const REAL *shift, const NAME(mn_tile_scratch) *s,
    int64_t d, int64_t i, int64_t r1)
{
    const int64_t n = r1 - i < MN_TILE ? r1 - i : MN_TILE;
    for (int64_t t = 0; t < MN_TILE; ++t) {
        REAL *o = s->x + t * s->dp;
        if (t < n) {
            const REAL *p = points + (i + t) * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j)
                o[j] = p[j] - shift[j];
        } else {  /* the last tile of the range: zero rows */
            for (int64_t j = 0; j < d; ++j)
                o[j] = 0;
        }
    }
    return n;
}

/*
 * log p(x_t, k) of the tile's rows into lp[t * K + k]:
 * cst[k] - sum_j q_kj / 2, with q_kj = prec[k, j] (x_tj - mu[k, j])^2, as
 *   MN_FUSED_FORMS 0: a = mu, b = prec: b (x - a)^2 (direct differences);
 *   MN_FUSED_FORMS 1: a = sqrt(prec), b = mu sqrt(prec): (x a - b)^2.
 */
static inline __attribute__((always_inline)) void NAME(mn_log_prob_tile)(
    const NAME(mn_tile_scratch) *s, const REAL *cst, int64_t k_total)
{
    const int64_t dp = s->dp;
    const REAL *x0 = s->x, *x1 = x0 + dp, *x2 = x1 + dp, *x3 = x2 + dp;
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL *a = s->a + k * dp, *b = s->b + k * dp;
        REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+:s0, s1, s2, s3) \
    aligned(x0, x1, x2, x3, a, b: MN_VECTOR_BYTES)
        for (int64_t j = 0; j < dp; ++j) {
#if MN_FUSED_FORMS
            const REAL v0 = x0[j] * a[j] - b[j], v1 = x1[j] * a[j] - b[j];
            const REAL v2 = x2[j] * a[j] - b[j], v3 = x3[j] * a[j] - b[j];
            s0 += v0 * v0;
            s1 += v1 * v1;
            s2 += v2 * v2;
            s3 += v3 * v3;
#else
            const REAL v0 = x0[j] - a[j], v1 = x1[j] - a[j];
            const REAL v2 = x2[j] - a[j], v3 = x3[j] - a[j];
            s0 += b[j] * (v0 * v0);
            s1 += b[j] * (v1 * v1);
            s2 += b[j] * (v2 * v2);
            s3 += b[j] * (v3 * v3);
#endif
        }
        REAL *lp = s->lp;
        lp[0 * k_total + k] = cst[k] - (REAL)0.5 * s0;
        lp[1 * k_total + k] = cst[k] - (REAL)0.5 * s1;
        lp[2 * k_total + k] = cst[k] - (REAL)0.5 * s2;
        lp[3 * k_total + k] = cst[k] - (REAL)0.5 * s3;
    }
}

/*
 * The tiny-value rule of the E-step (documented once, in
 * mn_chainer/mixture_steps.py): the row's log-densities minus their
 * maximum, raised to floor_ where below it (NaN stays NaN), exponentiated
 * (exp_floor = EXP(floor_) and EXP(0) = 1 without a call: most terms of a
 * well separated mixture are one or the other).  Stores them in w (which
 * may be row itself) unless w is NULL, returns their sum and the row's
 * maximum in *best_out.
 */
static inline __attribute__((always_inline)) REAL NAME(mn_row_exp)(
    const REAL *row, REAL *w, int64_t k_total, REAL floor_, REAL exp_floor,
    REAL *best_out)
{
    REAL best = row[0], total = 0;
    for (int64_t k = 1; k < k_total; ++k)
        best = row[k] > best ? row[k] : best;
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL v = row[k] - best;
        const REAL e = v <= floor_ ? exp_floor : v == 0 ? 1 : EXP(v);
        total += e;
        if (w != NULL)
            w[k] = e;
    }
    *best_out = best;
    return total;
}

/*
 * The M-step's sums of the tile with responsibilities w[t * K + k] (rows
 * past the last have w = 0), into the partial sums part (K, 2, dp) and
 * part_nk (K):
 *   MN_FUSED_FORMS 0 (a = mu): sum w (x - mu_k) and sum w (x - mu_k)^2;
 *   MN_FUSED_FORMS 1: sum w x and sum w x^2.
 */
static inline __attribute__((always_inline)) void NAME(mn_m_step_tile)(
    const NAME(mn_tile_scratch) *s, int64_t k_total)
{
    const int64_t dp = s->dp;
    const REAL *x0 = s->x, *x1 = x0 + dp, *x2 = x1 + dp, *x3 = x2 + dp;
    const REAL *w = s->lp;
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL w0 = w[k], w1 = w[k_total + k];
        const REAL w2 = w[2 * k_total + k], w3 = w[3 * k_total + k];
        REAL *s1 = s->part + k * 2 * dp;
        REAL *s2 = s1 + dp;
        s->part_nk[k] += (w0 + w1) + (w2 + w3);
#if !MN_FUSED_FORMS
        const REAL *m = s->a + k * dp;
#endif
#pragma omp simd aligned(x0, x1, x2, x3, s1, s2: MN_VECTOR_BYTES)
        for (int64_t j = 0; j < dp; ++j) {
#if MN_FUSED_FORMS
            const REAL v0 = x0[j], v1 = x1[j], v2 = x2[j], v3 = x3[j];
#else
            const REAL v0 = x0[j] - m[j], v1 = x1[j] - m[j];
            const REAL v2 = x2[j] - m[j], v3 = x3[j] - m[j];
#endif
            const REAL u0 = w0 * v0, u1 = w1 * v1;
            const REAL u2 = w2 * v2, u3 = w3 * v3;
            s1[j] = s1[j] + u0 + u1 + u2 + u3;
            s2[j] = s2[j] + u0 * v0 + u1 * v1 + u2 * v2 + u3 * v3;
        }
    }
}

/* Adds the partial sums to the double totals (sums (K, 2d), nk (K)) and
 * zeroes them. */
static inline __attribute__((always_inline)) void NAME(mn_flush_sums)(
    const NAME(mn_tile_scratch) *s, double *sums, double *nk, int64_t d,
    int64_t k_total)
{
    for (int64_t k = 0; k < k_total; ++k) {
        for (int64_t h = 0; h < 2; ++h) {
            REAL *part = s->part + (2 * k + h) * s->dp;
            double *total = sums + (2 * k + h) * d;
            for (int64_t j = 0; j < d; ++j) {
                total[j] += part[j];
                part[j] = 0;
            }
        }
        nk[k] += s->part_nk[k];
        s->part_nk[k] = 0;
    }
}

/*
 * One EM step's sums, fused, for x_i = points[i] - shift: the
 * responsibilities r_ik of every point (the softmax of its log-densities
 * under the tiny-value rule, NAME(mn_row_exp)) are accumulated at once
 * into nk[k] += r_ik and the M-step's sums (K, 2d) of NAME(mn_m_step_tile)
 * (double totals of REAL partial sums over at most MN_FLUSH_ROWS rows),
 * with the scratch *sp (NAME(mn_carve_scratch)) and the E-step's
 * constants cst (K).
 */
static inline __attribute__((always_inline)) void NAME(mn_em_rows)(
    const REAL *points, const REAL *shift, const NAME(mn_tile_scratch) *sp,
    const REAL *cst, double *sums, double *nk, int64_t d, int64_t k_total,
    int64_t r0, int64_t r1)
{
    const NAME(mn_tile_scratch) s = *sp;
    int64_t rows = 0;
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_tile_rows)(points, shift, &s, d, i, r1);
        NAME(mn_log_prob_tile)(&s, cst, k_total);
        for (int64_t t = 0; t < MN_TILE; ++t) {
            REAL *row = s.lp + t * k_total;
            if (t >= n) {
                for (int64_t k = 0; k < k_total; ++k)
                    row[k] = 0;
                continue;
            }
            REAL best;
            const REAL inv = 1 / NAME(mn_row_exp)(row, row, k_total,
                                                  s.floor_, s.exp_floor,
                                                  &best);
            for (int64_t k = 0; k < k_total; ++k)
                row[k] *= inv;
        }
        NAME(mn_m_step_tile)(&s, k_total);
        rows += MN_TILE;
        if (rows >= MN_FLUSH_ROWS || i + MN_TILE >= r1) {
            NAME(mn_flush_sums)(&s, sums, nk, d, k_total);
            rows = 0;
        }
    }
}

/*
 * The arguments of the E-step kernels (mn_em_sums, mn_log_resp): the
 * points, the frame's origin, the E-step's coefficients a, b and constants
 * cst (NAME(mn_log_prob_tile)), the floor of the log-densities, and the
 * threads' scratch: thread p's NAME(mn_scratch_size)(d, K) values at
 * scratch + p * scratch_stride.
 */
typedef struct {
    const REAL *points, *shift, *a, *b, *cst;
    REAL floor_;
    REAL *scratch;
    int64_t scratch_stride, d, k_total;
} NAME(mn_e_step_args);

/* Thread `thread`'s scratch, carved (NAME(mn_carve_scratch)). */
static inline __attribute__((always_inline)) NAME(mn_tile_scratch)
NAME(mn_thread_scratch)(const NAME(mn_e_step_args) *e, int64_t thread)
{
    return NAME(mn_carve_scratch)(e->scratch + thread * e->scratch_stride,
                                  e->a, e->b, e->d, e->k_total, e->floor_);
}

/*
 * One EM step's sums: NAME(mn_em_rows) of every chunk c, its sums at
 * sums + c * sums_stride and nk + c * nk_stride, on `threads` threads.
 */
typedef struct {
    NAME(mn_e_step_args) e;
    double *sums;
    int64_t sums_stride;
    double *nk;
    int64_t nk_stride;
    MN_CHUNK_FIELDS;
} NAME(mn_em_frame);

MN_CLONES
static void NAME(mn_em_task)(void *frame, int64_t thread)
{
    NAME(mn_em_frame) *f = frame;
    const NAME(mn_e_step_args) *e = &f->e;
    const NAME(mn_tile_scratch) s = NAME(mn_thread_scratch)(e, thread);
    MN_EACH_CHUNK(c, f)
        NAME(mn_em_rows)(e->points, e->shift, &s, e->cst,
                         f->sums + c * f->sums_stride,
                         f->nk + c * f->nk_stride, e->d, e->k_total,
                         f->bounds[c], f->bounds[c + 1]);
}

void NAME(mn_em_sums)(const REAL *points, const REAL *shift, const REAL *a,
                      const REAL *b, const REAL *cst, REAL floor_,
                      double *sums, int64_t sums_stride, double *nk,
                      int64_t nk_stride, REAL *scratch,
                      int64_t scratch_stride, int64_t d, int64_t k_total,
                      const int64_t *bounds, int64_t n_chunks,
                      int64_t threads)
{
    NAME(mn_em_frame) f = {{points, shift, a, b, cst, floor_, scratch,
                            scratch_stride, d, k_total},
                           sums, sums_stride, nk, nk_stride, bounds,
                           n_chunks, 0};
    mn_team_run(NAME(mn_em_task), &f, threads);
}

/*
 * E-step in log space: out[i, k] = log p(x_i, k) - log_norm_i (out has
 * shape (m, K)) with log_norm_i = logsumexp_k log p(x_i, k) under the
 * tiny-value rule (NAME(mn_row_exp); -inf for a row of -inf), also stored
 * in log_norm[i]; x_i = points[i] - shift, *sp and cst as in
 * NAME(mn_em_rows).
 */
static inline __attribute__((always_inline)) void NAME(mn_log_resp_rows)(
    const REAL *points, const REAL *shift, const NAME(mn_tile_scratch) *sp,
    const REAL *cst, REAL *out, REAL *log_norm, int64_t d, int64_t k_total,
    int64_t r0, int64_t r1)
{
    const NAME(mn_tile_scratch) s = *sp;
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_tile_rows)(points, shift, &s, d, i, r1);
        NAME(mn_log_prob_tile)(&s, cst, k_total);
        for (int64_t t = 0; t < n; ++t) {
            const REAL *row = s.lp + t * k_total;
            REAL best;
            const REAL total = NAME(mn_row_exp)(row, NULL, k_total,
                                                s.floor_, s.exp_floor,
                                                &best);
            const REAL norm = best == -(REAL)INFINITY ? best
                                                      : best + LOG(total);
            for (int64_t k = 0; k < k_total; ++k)
                out[(i + t) * k_total + k] = row[k] - norm;
            log_norm[i + t] = norm;
        }
    }
}

/*
 * The E-step in log space: NAME(mn_log_resp_rows) of every chunk, on
 * `threads` threads.
 */
typedef struct {
    NAME(mn_e_step_args) e;
    REAL *out, *log_norm;
    MN_CHUNK_FIELDS;
} NAME(mn_log_resp_frame);

MN_CLONES
static void NAME(mn_log_resp_task)(void *frame, int64_t thread)
{
    NAME(mn_log_resp_frame) *f = frame;
    const NAME(mn_e_step_args) *e = &f->e;
    const NAME(mn_tile_scratch) s = NAME(mn_thread_scratch)(e, thread);
    MN_EACH_CHUNK(c, f)
        NAME(mn_log_resp_rows)(e->points, e->shift, &s, e->cst, f->out,
                               f->log_norm, e->d, e->k_total, f->bounds[c],
                               f->bounds[c + 1]);
}

void NAME(mn_log_resp)(const REAL *points, const REAL *shift, const REAL *a,
                       const REAL *b, const REAL *cst, REAL floor_,
                       REAL *out, REAL *log_norm, REAL *scratch,
                       int64_t scratch_stride, int64_t d, int64_t k_total,
                       const int64_t *bounds, int64_t n_chunks,
                       int64_t threads)
{
    NAME(mn_log_resp_frame) f = {{points, shift, a, b, cst, floor_,
                                  scratch, scratch_stride, d, k_total},
                                 out, log_norm, bounds, n_chunks, 0};
    mn_team_run(NAME(mn_log_resp_task), &f, threads);
}


#undef LANES
#undef PADDED
