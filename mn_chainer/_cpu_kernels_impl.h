/*
 * The CPU kernels of mn_chainer/_cpu_kernels.c for one floating type.
 *
 * Included once per type with REAL (float or double), NAME(n) (the
 * function name with a type suffix), EXP and LOG defined.  Every function
 * works on the rows [r0, r1) of a C-contiguous (m, d) point matrix, so that
 * the caller (mn_chainer/cpu_kernels.py) can run several row ranges on
 * several threads, each with its own output sums.  Their NumPy twins are in
 * mn_chainer/gmm.py; the tests compare them.
 *
 * The coefficients of the E-step are those of gmm._gaussian_terms, one row
 * per component: log p(x, k) = sum_j coef[k, j] x_j
 *                              + sum_j coef[k, d + j] x_j^2 + cst[k].
 */

/*
 * sums[j] += sum of points[i, j] over the rows (the column sums) and, if
 * first is not NULL, d2[i] = |points[i] - first|^2 (K-means++'s distances
 * to its first centre, in the same pass).
 */
MN_CLONES
void NAME(mn_column_sums)(const REAL *points, const REAL *first,
                          REAL *sums, REAL *d2, int64_t d, int64_t r0,
                          int64_t r1)
{
    for (int64_t i = r0; i < r1; ++i) {
        const REAL *p = points + i * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j)
            sums[j] += p[j];
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
 * M-step sums of hard clusters of the centred points x = points - shift:
 * counts[k] += #{i: labels[i] = k}, sums[k, :d] += sum x_i and
 * sums[k, d:] += sum x_i^2 over the cluster.  labels must lie in [0, K)
 * (checked by the caller).
 */
MN_CLONES
void NAME(mn_cluster_sums)(const REAL *points, const REAL *shift,
                           const int64_t *labels, REAL *sums, REAL *counts,
                           int64_t d, int64_t r0, int64_t r1)
{
    for (int64_t i = r0; i < r1; ++i) {
        const REAL *p = points + i * d;
        const int64_t k = labels[i];
        REAL *s1 = sums + k * 2 * d;
        REAL *s2 = s1 + d;
        counts[k] += 1;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
            const REAL v = p[j] - shift[j];
            s1[j] += v;
            s2[j] += v * v;
        }
    }
}

/*
 * The E-step and the M-step work on tiles of MN_TILE = 4 rows: every
 * coefficient (E) and every sum (M) loaded serves four points, and the
 * eight running sums of a tile's dot products are independent, so the
 * loops run at the rate of the loads rather than at the latency of one
 * chain of additions.  The tile's rows are centred into a scratch buffer
 * (the point matrix itself is never copied); a tile past the last row is
 * padded with zero rows whose responsibilities are zero.
 *
 * log p(x_t, k) of the tile's rows into lp[t * K + k]; sq[t] receives x_t^2.
 */
static inline __attribute__((always_inline)) void NAME(mn_log_prob_tile)(
    const REAL *const *xt, REAL *const *sqt, const REAL *coef,
    const REAL *cst, REAL *lp, int64_t d, int64_t k_total)
{
    for (int t = 0; t < MN_TILE; ++t) {
        const REAL *xi = xt[t];
        REAL *sq = sqt[t];
#pragma omp simd
        for (int64_t j = 0; j < d; ++j)
            sq[j] = xi[j] * xi[j];
    }
    const REAL *x0 = xt[0], *x1 = xt[1], *x2 = xt[2], *x3 = xt[3];
    const REAL *q0 = sqt[0], *q1 = sqt[1], *q2 = sqt[2], *q3 = sqt[3];
    for (int64_t k = 0; k < k_total; ++k) {
        const REAL *a = coef + k * 2 * d;
        const REAL *b = a + d;
        REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0, u0 = 0, u1 = 0, u2 = 0, u3 = 0;
#pragma omp simd reduction(+:s0, s1, s2, s3, u0, u1, u2, u3)
        for (int64_t j = 0; j < d; ++j) {
            s0 += x0[j] * a[j];
            s1 += x1[j] * a[j];
            s2 += x2[j] * a[j];
            s3 += x3[j] * a[j];
            u0 += q0[j] * b[j];
            u1 += q1[j] * b[j];
            u2 += q2[j] * b[j];
            u3 += q3[j] * b[j];
        }
        lp[0 * k_total + k] = s0 + u0 + cst[k];
        lp[1 * k_total + k] = s1 + u1 + cst[k];
        lp[2 * k_total + k] = s2 + u2 + cst[k];
        lp[3 * k_total + k] = s3 + u3 + cst[k];
    }
}

/*
 * The tile of centred rows starting at row i, x_t = points[i + t] - shift,
 * into x_buf (rows past r1 are zero); returns the number of real rows.
 */
static inline __attribute__((always_inline)) int64_t NAME(mn_tile_rows)(
    const REAL *points, const REAL *shift, REAL *x_buf, REAL *sq_buf,
    int64_t d, int64_t i, int64_t r1, const REAL **xt, REAL **sqt)
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
        xt[t] = o;
        sqt[t] = sq_buf + t * d;
    }
    return n;
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
 * One EM step's sums, fused: the responsibilities of every point (the
 * softmax of its log-densities under the tiny-value rule, mn_row_exp) are
 * accumulated at once into nk[k] += r_ik, sums[k, :d] += r_ik x_i and
 * sums[k, d:] += r_ik x_i^2, x_i = points[i] - shift.  scratch holds
 * NAME(mn_scratch_size)(d, K) values.
 */
MN_CLONES
void NAME(mn_em_sums)(const REAL *points, const REAL *shift,
                      const REAL *coef, const REAL *cst, REAL floor_,
                      REAL *sums, REAL *nk, REAL *scratch, int64_t d,
                      int64_t k_total, int64_t r0, int64_t r1)
{
    REAL *x_buf = scratch;
    REAL *sq_buf = x_buf + MN_TILE * d;
    REAL *lp = sq_buf + MN_TILE * d;
    const REAL *xt[MN_TILE];
    REAL *sqt[MN_TILE];
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_tile_rows)(points, shift, x_buf, sq_buf, d,
                                             i, r1, xt, sqt);
        NAME(mn_log_prob_tile)(xt, sqt, coef, cst, lp, d, k_total);
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
        const REAL *x0 = xt[0], *x1 = xt[1], *x2 = xt[2], *x3 = xt[3];
        const REAL *q0 = sqt[0], *q1 = sqt[1], *q2 = sqt[2], *q3 = sqt[3];
        for (int64_t k = 0; k < k_total; ++k) {
            const REAL w0 = lp[k], w1 = lp[k_total + k];
            const REAL w2 = lp[2 * k_total + k], w3 = lp[3 * k_total + k];
            REAL *s1 = sums + k * 2 * d;
            REAL *s2 = s1 + d;
            nk[k] += (w0 + w1) + (w2 + w3);
#pragma omp simd
            for (int64_t j = 0; j < d; ++j) {
                s1[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j] + w3 * x3[j];
                s2[j] += w0 * q0[j] + w1 * q1[j] + w2 * q2[j] + w3 * q3[j];
            }
        }
    }
}

/*
 * E-step in log space: out[i, k] = log p(x_i, k) - log_norm_i (out has
 * shape (m, K)) with log_norm_i = logsumexp_k log p(x_i, k) under the
 * tiny-value rule (mn_row_exp; -inf for a row of -inf), also stored in
 * log_norm[i] unless log_norm is NULL; x_i = points[i] - shift.  scratch
 * holds NAME(mn_scratch_size)(d, K) values.
 */
MN_CLONES
void NAME(mn_log_resp)(const REAL *points, const REAL *shift,
                       const REAL *coef, const REAL *cst, REAL floor_,
                       REAL *out, REAL *log_norm, REAL *scratch, int64_t d,
                       int64_t k_total, int64_t r0, int64_t r1)
{
    REAL *x_buf = scratch;
    REAL *sq_buf = x_buf + MN_TILE * d;
    REAL *lp = sq_buf + MN_TILE * d;
    const REAL *xt[MN_TILE];
    REAL *sqt[MN_TILE];
    for (int64_t i = r0; i < r1; i += MN_TILE) {
        const int64_t n = NAME(mn_tile_rows)(points, shift, x_buf, sq_buf, d,
                                             i, r1, xt, sqt);
        NAME(mn_log_prob_tile)(xt, sqt, coef, cst, lp, d, k_total);
        for (int64_t t = 0; t < n; ++t) {
            const REAL *row = lp + t * k_total;
            REAL best;
            const REAL total = NAME(mn_row_exp)(row, NULL, k_total, floor_,
                                                &best);
            const REAL norm = best == -(REAL)INFINITY ? best
                                                      : best + LOG(total);
            for (int64_t k = 0; k < k_total; ++k)
                out[(i + t) * k_total + k] = row[k] - norm;
            if (log_norm != NULL)
                log_norm[i + t] = norm;
        }
    }
}

/* Scratch values per thread of mn_em_sums and mn_log_resp: the tile's
 * centred rows and their squares, and the tile's log-densities. */
int64_t NAME(mn_scratch_size)(int64_t d, int64_t k_total)
{
    return 2 * MN_TILE * d + MN_TILE * k_total;
}
