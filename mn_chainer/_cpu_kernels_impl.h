/*
 * The CPU kernels of mn_chainer/_cpu_kernels.c for one floating type.
 *
 * Included once per type with REAL (float or double), NAME(n) (the
 * function name with a type suffix), EXP and LOG defined.  Every function
 * works on the rows [r0, r1) of a C-contiguous (m, d) point matrix, so that
 * the caller (mn_chainer/cpu_kernels.py) can run several row ranges on
 * several threads, each with its own output sums.  Their NumPy twins are
 * the passes of mn_chainer/fit_passes.py (ArrayPasses); the tests compare
 * them, and both with float64 references.
 *
 * Accuracy, as the NumPy path's (mn_chainer/mixture_steps.py):
 * - sums over the rows are made in double: directly in the passes that
 *   mostly read (column and cluster sums), and in the E+M pass through
 *   REAL partial sums over at most MN_FLUSH_ROWS rows, added to double
 *   totals;
 * - the E-step takes direct differences, prec (x - mu)^2, never the
 *   expanded quadratic x^2 prec - 2 x mu prec + mu^2 prec, which cancels
 *   where a precision is large (a channel whose component variance is
 *   reg_covar, as rectified activations give);
 * - the M-step of an EM step sums r (x - mu_k) and r (x - mu_k)^2 about
 *   the means mu_k of the E-step's mixture, so that E[x^2] - mu^2 never
 *   cancels in a tight component.
 */

/*
 * sums[j] += sum of points[i, j] over the rows (the column sums, in
 * double), amax[j] the running maximum of |points[i, j]|, and, if first is
 * not NULL, d2[i] = |points[i] - first|^2 (K-means++'s distances to its
 * first centre, in the same pass).
 */
MN_CLONES
void NAME(mn_column_sums)(const REAL *points, const REAL *first,
                          double *sums, REAL *amax, REAL *d2, int64_t d,
                          int64_t r0, int64_t r1)
{
    for (int64_t i = r0; i < r1; ++i) {
        const REAL *p = points + i * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
            const REAL v = p[j] < 0 ? -p[j] : p[j];
            sums[j] += p[j];
            amax[j] = v > amax[j] ? v : amax[j];
        }
        if (first != NULL) {
            REAL acc = 0;
#pragma omp simd reduction(+:acc)
            for (int64_t j = 0; j < d; ++j) {
                const REAL v = p[j] - first[j];
                acc += v * v;
            }
            d2[i] = acc;
        }
    }
}

/*
 * K-means++: out[t, i] = min(closest[i], |x_i - cand_t|^2) for the t
 * candidates (direct differences, never negative).  Four rows at a time,
 * with four independent running sums; out has shape (t, m).
 */
MN_CLONES
void NAME(mn_candidate_d2)(const REAL *x, const REAL *cand,
                           const REAL *closest, REAL *out, int64_t m,
                           int64_t d, int64_t t, int64_t r0, int64_t r1)
{
    int64_t i = r0;
    for (; i + 4 <= r1; i += 4) {
        const REAL *x0 = x + i * d, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
        for (int64_t q = 0; q < t; ++q) {
            const REAL *c = cand + q * d;
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
            REAL *o = out + q * m + i;
            o[0] = a0 < closest[i] ? a0 : closest[i];
            o[1] = a1 < closest[i + 1] ? a1 : closest[i + 1];
            o[2] = a2 < closest[i + 2] ? a2 : closest[i + 2];
            o[3] = a3 < closest[i + 3] ? a3 : closest[i + 3];
        }
    }
    for (; i < r1; ++i) {
        const REAL *xi = x + i * d;
        for (int64_t q = 0; q < t; ++q) {
            const REAL *c = cand + q * d;
            REAL acc = 0;
#pragma omp simd reduction(+:acc)
            for (int64_t j = 0; j < d; ++j) {
                const REAL v = xi[j] - c[j];
                acc += v * v;
            }
            out[q * m + i] = acc < closest[i] ? acc : closest[i];
        }
    }
}

/*
 * M-step sums of hard clusters of the centred points x = points - shift,
 * in double: counts[k] += #{i: labels[i] = k}, sums[k, :d] += sum x_i and
 * sums[k, d:] += sum x_i^2 over the cluster (x_i and its square exact for
 * float points).  labels must lie in [0, K) (checked by the caller).
 */
MN_CLONES
void NAME(mn_cluster_sums)(const REAL *points, const REAL *shift,
                           const int64_t *labels, double *sums,
                           double *counts, int64_t d, int64_t r0, int64_t r1)
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
 * The E-step and the M-step work on tiles of MN_TILE = 4 rows: every
 * mean and precision loaded serves four points, and the running sums of a
 * tile's rows are independent, so the loops run at the rate of the loads
 * rather than at the latency of one chain of additions.  The tile's rows
 * are centred into a scratch buffer (the point matrix itself is never
 * copied); a tile past the last row is padded with zero rows whose
 * responsibilities are zero.
 *
 * The tile of centred rows starting at row i, x_t = points[i + t] - shift,
 * into x_buf (MN_TILE rows of d; rows past r1 are zero); returns the
 * number of real rows.
 */
static inline __attribute__((always_inline)) int64_t NAME(mn_tile_rows)(
    const REAL *points, const REAL *shift, REAL *x_buf, int64_t d,
    int64_t i, int64_t r1)
{
    const int64_t n = r1 - i < MN_TILE ? r1 - i : MN_TILE;
    for (int t = 0; t < MN_TILE; ++t) {
        REAL *o = x_buf + t * d;
        if (t < n) {
            const REAL *p = points + (i + t) * d;
#pragma omp simd
            for (int64_t j = 0; j < d; ++j)
                o[j] = p[j] - shift[j];
        } else {
            for (int64_t j = 0; j < d; ++j)
                o[j] = 0;
        }
    }
    return n;
}

/*
 * log p(x_t, k) of the tile's rows into lp[t * K + k]:
 * cst[k] - sum_j prec[k, j] (x_tj - mu[k, j])^2 / 2, direct differences.
 */
static inline __attribute__((always_inline)) void NAME(mn_log_prob_tile)(
    const REAL *x_buf, const REAL *mu, const REAL *prec, const REAL *cst,
    REAL *lp, int64_t d, int64_t k_total)
{
    const REAL *x0 = x_buf, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL *m = mu + k * d;
        const REAL *q = prec + k * d;
        REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+:s0, s1, s2, s3)
        for (int64_t j = 0; j < d; ++j) {
            const REAL v0 = x0[j] - m[j], v1 = x1[j] - m[j];
            const REAL v2 = x2[j] - m[j], v3 = x3[j] - m[j];
            s0 += q[j] * (v0 * v0);
            s1 += q[j] * (v1 * v1);
            s2 += q[j] * (v2 * v2);
            s3 += q[j] * (v3 * v3);
        }
        lp[0 * k_total + k] = cst[k] - (REAL)0.5 * s0;
        lp[1 * k_total + k] = cst[k] - (REAL)0.5 * s1;
        lp[2 * k_total + k] = cst[k] - (REAL)0.5 * s2;
        lp[3 * k_total + k] = cst[k] - (REAL)0.5 * s3;
    }
}

/*
 * The tiny-value rule of the E-step (documented once, in
 * mn_chainer/mixture_steps.py): the row's log-densities minus their
 * maximum, raised to floor_ where below it (NaN stays NaN), exponentiated.
 * Stores them in w (which may be row itself) unless w is NULL, returns
 * their sum and the row's maximum in *best_out.
 */
static inline __attribute__((always_inline)) REAL NAME(mn_row_exp)(
    const REAL *row, REAL *w, int64_t k_total, REAL floor_, REAL *best_out)
{
    REAL best = row[0], total = 0;
    for (int64_t k = 1; k < k_total; ++k)
        best = row[k] > best ? row[k] : best;
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL v = row[k] - best;
        const REAL e = EXP(v < floor_ ? floor_ : v);
        total += e;
        if (w != NULL)
            w[k] = e;
    }
    *best_out = best;
    return total;
}

/*
 * The E-step of the tile starting at row i (the arguments of mn_em_sums):
 * centres its rows into x_buf, leaves their log-densities in lp and
 * returns the number of real rows.
 */
static inline __attribute__((always_inline)) int64_t NAME(mn_e_step_tile)(
    const REAL *points, const REAL *shift, const REAL *mu, const REAL *prec,
    const REAL *cst, REAL *x_buf, REAL *lp, int64_t d, int64_t k_total,
    int64_t i, int64_t r1)
{
    const int64_t n = NAME(mn_tile_rows)(points, shift, x_buf, d, i, r1);
    NAME(mn_log_prob_tile)(x_buf, mu, prec, cst, lp, d, k_total);
    return n;
}

/*
 * One EM step's sums, fused, for x_i = points[i] - shift: the
 * responsibilities r_ik of every point (the softmax of its log-densities
 * under the tiny-value rule, mn_row_exp) are accumulated at once into
 * nk[k] += r_ik, sums[k, :d] += r_ik (x_i - mu_k) and
 * sums[k, d:] += r_ik (x_i - mu_k)^2: the M-step's sums about the
 * E-step's means (double totals of REAL partial sums over at most
 * MN_FLUSH_ROWS rows).  scratch holds NAME(mn_scratch_size)(d, K) values.
 */
MN_CLONES
void NAME(mn_em_sums)(const REAL *points, const REAL *shift, const REAL *mu,
                      const REAL *prec, const REAL *cst, REAL floor_,
                      double *sums, double *nk, REAL *scratch, int64_t d,
                      int64_t k_total, int64_t r0, int64_t r1)
{
    REAL *x_buf = scratch;
    REAL *lp = x_buf + MN_TILE * d;
    REAL *part = lp + MN_TILE * k_total;      /* (K, 2d) partial sums */
    REAL *part_nk = part + k_total * 2 * d;   /* (K,) */
    const int64_t n_part = k_total * (2 * d + 1);
    for (int64_t e = 0; e < n_part; ++e)
        part[e] = 0;
    const REAL *x0 = x_buf, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
    int64_t rows = 0;
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_e_step_tile)(points, shift, mu, prec, cst,
                                               x_buf, lp, d, k_total, i, r1);
        for (int t = 0; t < MN_TILE; ++t) {
            REAL *row = lp + t * k_total;
            if (t >= n) {
                for (int64_t k = 0; k < k_total; ++k)
                    row[k] = 0;
                continue;
            }
            REAL best;
            const REAL total = NAME(mn_row_exp)(row, row, k_total, floor_,
                                                &best);
            for (int64_t k = 0; k < k_total; ++k)
                row[k] /= total;
        }
        for (int64_t k = 0; k < k_total; ++k) {
            const REAL w0 = lp[k], w1 = lp[k_total + k];
            const REAL w2 = lp[2 * k_total + k], w3 = lp[3 * k_total + k];
            const REAL *m = mu + k * d;
            REAL *s1 = part + k * 2 * d;
            REAL *s2 = s1 + d;
            part_nk[k] += (w0 + w1) + (w2 + w3);
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                const REAL v0 = x0[j] - m[j], v1 = x1[j] - m[j];
                const REAL v2 = x2[j] - m[j], v3 = x3[j] - m[j];
                const REAL u0 = w0 * v0, u1 = w1 * v1;
                const REAL u2 = w2 * v2, u3 = w3 * v3;
                s1[j] += (u0 + u1) + (u2 + u3);
                s2[j] += (u0 * v0 + u1 * v1) + (u2 * v2 + u3 * v3);
            }
        }
        rows += MN_TILE;
        if (rows >= MN_FLUSH_ROWS || i + MN_TILE >= r1) {
            for (int64_t e = 0; e < k_total * 2 * d; ++e) {
                sums[e] += part[e];
                part[e] = 0;
            }
            for (int64_t k = 0; k < k_total; ++k) {
                nk[k] += part_nk[k];
                part_nk[k] = 0;
            }
            rows = 0;
        }
    }
}

/*
 * E-step in log space: out[i, k] = log p(x_i, k) - log_norm_i (out has
 * shape (m, K)) with log_norm_i = logsumexp_k log p(x_i, k) under the
 * tiny-value rule (mn_row_exp; -inf for a row of -inf), also stored in
 * log_norm[i]; x_i = points[i] - shift.  scratch holds
 * NAME(mn_scratch_size)(d, K) values.
 */
MN_CLONES
void NAME(mn_log_resp)(const REAL *points, const REAL *shift, const REAL *mu,
                       const REAL *prec, const REAL *cst, REAL floor_,
                       REAL *out, REAL *log_norm, REAL *scratch, int64_t d,
                       int64_t k_total, int64_t r0, int64_t r1)
{
    REAL *x_buf = scratch;
    REAL *lp = x_buf + MN_TILE * d;
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_e_step_tile)(points, shift, mu, prec, cst,
                                               x_buf, lp, d, k_total, i, r1);
        for (int64_t t = 0; t < n; ++t) {
            const REAL *row = lp + t * k_total;
            REAL best;
            const REAL total = NAME(mn_row_exp)(row, NULL, k_total, floor_,
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
 * Scratch values per thread of mn_em_sums and mn_log_resp: the tile's
 * centred rows, the tile's log-densities and the partial sums.
 */
int64_t NAME(mn_scratch_size)(int64_t d, int64_t k_total)
{
    return MN_TILE * d + MN_TILE * k_total + k_total * (2 * d + 1);
}
