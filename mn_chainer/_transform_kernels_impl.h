/*
 * The fused passes of the Mixture Normalizing Transform (paper Eqs. 34-37
 * and 40; gradient DESIGN §1.3) for one floating type, included by
 * _cpu_kernels.c once per type with REAL and NAME(n) defined (as
 * _cpu_kernels_impl.h).  mn_chainer/transform_kernels.py checks the
 * arguments and runs them on several threads; their NumPy twins are the
 * methods of ArrayPasses (mn_chainer/functions/transform_passes.py), the
 * tests compare them, and both with float64 references.
 *
 * The batch: activations x (N, C, P) (P the spatial positions; the points
 * are the channel vectors x[n, :, p]), per-point coefficients w (N, K, P)
 * (the responsibilities tau, or a = tau / sqrt(pi)), per-channel values
 * (C) and per-component, per-channel values (K, C), all C-contiguous.
 * Every pass works on x - shift (shift (C): the origin of the statistics'
 * sums, zero where none is needed) and visits the batch by *lines*, the
 * units its chunks are cut in (MN_EACH_CHUNK of _thread_team.h):
 *   P > 1: the N * C lines x[n, c, :] of P values, one channel of one
 *     sample: the coefficients of its points are the rows w[n, k, :], the
 *     per-channel values one number each; the inner loops run along the
 *     points;
 *   P = 1: the N lines x[n, :] of C values, one point: its coefficients
 *     w[n, k] are numbers, the per-channel values rows; the inner loops run
 *     along the channels.
 * Each pass reads x (and w, and g) once; the K components are looped
 * inside, over a segment of at most MN_SEGMENT points of a line that stays
 * in the L1 cache.
 *
 * The rectification of Eq. 40 enters the gradient as a mask per component,
 * on where z = scale (x - shift) + offset > 0, given as a comparison of
 * sign[c] (x - shift) with a threshold thr[k, c] (the sign of gamma and
 * -offset / |scale|: exact for a scale of either sign or zero; the NumPy
 * twin takes the same comparison); sign == NULL: no mask.
 *
 * Accuracy: sums in double, through REAL partial sums over at most
 * MN_SEGMENT points (P > 1) or of single products (P = 1), as the E+M
 * kernel of _cpu_kernels_impl.h flushes its REAL partial sums.
 */

/*
 * The responsibility-weighted sums of one pass:
 *   sums[k, c]         = sum over the points of w m v,
 *   sums[K * C + k*C + c] = sum over the points of w m v (x - shift),
 * with m the mask of component k (1 without one) and v = x - shift where
 * v is NULL (the statistics: sum w (x - c) and sum w (x - c)^2), else the
 * values v (N, C, P) (the gradient: sum a m g and sum a m g (x - c)).
 * Lines [l0, l1) of P > 1 values, added to sums (2, K, C).
 */
static inline __attribute__((always_inline)) void NAME(mn_mix_sums_lines)(
    const REAL *x, const REAL *v, const REAL *w, const REAL *shift,
    const REAL *sign, const REAL *thr, double *sums, int64_t n_channels,
    int64_t size, int64_t k_total, int64_t l0, int64_t l1, const int has_v,
    const int masked)
{
    double *sums_vx = sums + k_total * n_channels;
    for (int64_t line = l0; line < l1; ++line) {
        const int64_t n = line / n_channels, c = line % n_channels;
        const REAL *xl = x + line * size, *vl = has_v ? v + line * size : x;
        const REAL *wn = w + n * k_total * size;
        for (int64_t p0 = 0; p0 < size; p0 += MN_SEGMENT) {
            const int64_t len = size - p0 < MN_SEGMENT ? size - p0
                                                       : MN_SEGMENT;
            /* The segment's centred x (for the masks, times the sign), v
             * and v (x - shift). */
            REAL xs[MN_SEGMENT], vs[MN_SEGMENT], vxs[MN_SEGMENT];
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) {
                const REAL xc = xl[p0 + j] - shift[c];
                const REAL vj = has_v ? vl[p0 + j] : xc;
                xs[j] = masked ? sign[c] * xc : xc;
                vs[j] = vj;
                vxs[j] = vj * xc;
            }
            for (int64_t k = 0; k < k_total; ++k) {
                const REAL *wk = wn + k * size + p0;
                REAL s1 = 0, s2 = 0;
                if (masked) {
                    const REAL t = thr[k * n_channels + c];
#pragma omp simd reduction(+:s1, s2)
                    for (int64_t j = 0; j < len; ++j) {
                        const REAL wm = xs[j] > t ? wk[j] : 0;
                        s1 += wm * vs[j];
                        s2 += wm * vxs[j];
                    }
                } else {
#pragma omp simd reduction(+:s1, s2)
                    for (int64_t j = 0; j < len; ++j) {
                        s1 += wk[j] * vs[j];
                        s2 += wk[j] * vxs[j];
                    }
                }
                sums[k * n_channels + c] += s1;
                sums_vx[k * n_channels + c] += s2;
            }
        }
    }
}

/* The sums of NAME(mn_mix_sums_lines) over the points [l0, l1) (P = 1). */
static inline __attribute__((always_inline)) void NAME(mn_mix_sums_points)(
    const REAL *x, const REAL *v, const REAL *w, const REAL *shift,
    const REAL *sign, const REAL *thr, double *sums, int64_t n_channels,
    int64_t k_total, int64_t l0, int64_t l1, const int has_v,
    const int masked)
{
    for (int64_t n = l0; n < l1; ++n) {
        const REAL *xn = x + n * n_channels;
        const REAL *vn = has_v ? v + n * n_channels : x;
        for (int64_t k = 0; k < k_total; ++k) {
            const REAL wk = w[n * k_total + k];
            const REAL *t = masked ? thr + k * n_channels : thr;
            double *s1 = sums + k * n_channels;
            double *s2 = s1 + k_total * n_channels;
#pragma omp simd
            for (int64_t c = 0; c < n_channels; ++c) {
                const REAL xc = xn[c] - shift[c];
                const REAL vc = has_v ? vn[c] : xc;
                const REAL wm = masked && !(sign[c] * xc > t[c]) ? 0 : wk;
                const REAL u = wm * vc;
                s1[c] += u;
                s2[c] += u * xc;
            }
        }
    }
}

/*
 * The sums of one pass (NAME(mn_mix_sums_lines)) for every chunk c of the
 * lines, its sums at sums + c * stride, on `threads` threads.
 */
typedef struct {
    const REAL *x, *v, *w, *shift, *sign, *thr;
    double *sums;
    int64_t stride, n_channels, size, k_total;
    MN_CHUNK_FIELDS;
} NAME(mn_mix_sums_frame);

MN_CLONES
static void NAME(mn_mix_sums_task)(void *frame, int64_t thread)
{
    NAME(mn_mix_sums_frame) *f = frame;
    (void)thread;
    /* The three forms, each compiled with its flags as constants. */
#define MN_SUMS(has_v, masked) do { \
        if (f->size == 1) \
            NAME(mn_mix_sums_points)(f->x, f->v, f->w, f->shift, f->sign, \
                                     f->thr, f->sums + c * f->stride, \
                                     f->n_channels, f->k_total, \
                                     f->bounds[c], f->bounds[c + 1], has_v, \
                                     masked); \
        else \
            NAME(mn_mix_sums_lines)(f->x, f->v, f->w, f->shift, f->sign, \
                                    f->thr, f->sums + c * f->stride, \
                                    f->n_channels, f->size, f->k_total, \
                                    f->bounds[c], f->bounds[c + 1], has_v, \
                                    masked); \
    } while (0)
    MN_EACH_CHUNK(c, f) {
        if (f->v == NULL)
            MN_SUMS(0, 0);
        else if (f->sign == NULL)
            MN_SUMS(1, 0);
        else
            MN_SUMS(1, 1);
    }
#undef MN_SUMS
}

void NAME(mn_mix_sums)(const REAL *x, const REAL *v, const REAL *w,
                       const REAL *shift, const REAL *sign, const REAL *thr,
                       double *sums, int64_t stride, int64_t n_channels,
                       int64_t size, int64_t k_total, const int64_t *bounds,
                       int64_t n_chunks, int64_t threads)
{
    NAME(mn_mix_sums_frame) f = {x, v, w, shift, sign, thr, sums, stride,
                                 n_channels, size, k_total, bounds, n_chunks,
                                 0};
    mn_team_run(NAME(mn_mix_sums_task), &f, threads);
}

/*
 * The output (Eqs. 34 + 37, or 40 with relu):
 *   y = sum_k a_k f(scale[k, c] (x - shift) + offset[k, c]),
 * f the identity, or max(., 0) with relu.  Lines [l0, l1) of P > 1 values.
 */
static inline __attribute__((always_inline)) void NAME(mn_mix_forward_lines)(
    const REAL *x, const REAL *a, const REAL *shift, const REAL *scale,
    const REAL *offset, REAL *y, int64_t n_channels, int64_t size,
    int64_t k_total, int64_t l0, int64_t l1, const int relu)
{
    for (int64_t line = l0; line < l1; ++line) {
        const int64_t n = line / n_channels, c = line % n_channels;
        const REAL *xl = x + line * size, *an = a + n * k_total * size;
        REAL *yl = y + line * size;
        for (int64_t p0 = 0; p0 < size; p0 += MN_SEGMENT) {
            const int64_t len = size - p0 < MN_SEGMENT ? size - p0
                                                       : MN_SEGMENT;
            REAL xs[MN_SEGMENT], acc[MN_SEGMENT];
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) {
                xs[j] = xl[p0 + j] - shift[c];
                acc[j] = 0;
            }
            for (int64_t k = 0; k < k_total; ++k) {
                const REAL s = scale[k * n_channels + c];
                const REAL o = offset[k * n_channels + c];
                const REAL *ak = an + k * size + p0;
#pragma omp simd
                for (int64_t j = 0; j < len; ++j) {
                    const REAL z = s * xs[j] + o;
                    acc[j] += ak[j] * (relu && z < 0 ? 0 : z);
                }
            }
#pragma omp simd
            for (int64_t j = 0; j < len; ++j)
                yl[p0 + j] = acc[j];
        }
    }
}

/* The output of NAME(mn_mix_forward_lines) at the points [l0, l1) (P = 1);
 * y holds the running sums. */
static inline __attribute__((always_inline)) void NAME(mn_mix_forward_points)(
    const REAL *x, const REAL *a, const REAL *shift, const REAL *scale,
    const REAL *offset, REAL *y, int64_t n_channels, int64_t k_total,
    int64_t l0, int64_t l1, const int relu)
{
    for (int64_t n = l0; n < l1; ++n) {
        const REAL *xn = x + n * n_channels;
        REAL *yn = y + n * n_channels;
        for (int64_t c = 0; c < n_channels; ++c)
            yn[c] = 0;
        for (int64_t k = 0; k < k_total; ++k) {
            const REAL ak = a[n * k_total + k];
            const REAL *s = scale + k * n_channels;
            const REAL *o = offset + k * n_channels;
#pragma omp simd
            for (int64_t c = 0; c < n_channels; ++c) {
                const REAL z = s[c] * (xn[c] - shift[c]) + o[c];
                yn[c] += ak * (relu && z < 0 ? 0 : z);
            }
        }
    }
}

/* The output (NAME(mn_mix_forward_lines)) of every chunk of lines, on
 * `threads` threads; relu is 0 or 1. */
typedef struct {
    const REAL *x, *a, *shift, *scale, *offset;
    int64_t relu;
    REAL *y;
    int64_t n_channels, size, k_total;
    MN_CHUNK_FIELDS;
} NAME(mn_mix_forward_frame);

MN_CLONES
static void NAME(mn_mix_forward_task)(void *frame, int64_t thread)
{
    NAME(mn_mix_forward_frame) *f = frame;
    (void)thread;
    /* The two forms, each compiled with its flag as a constant. */
#define MN_FORWARD(relu) do { \
        if (f->size == 1) \
            NAME(mn_mix_forward_points)(f->x, f->a, f->shift, f->scale, \
                                        f->offset, f->y, f->n_channels, \
                                        f->k_total, f->bounds[c], \
                                        f->bounds[c + 1], relu); \
        else \
            NAME(mn_mix_forward_lines)(f->x, f->a, f->shift, f->scale, \
                                       f->offset, f->y, f->n_channels, \
                                       f->size, f->k_total, f->bounds[c], \
                                       f->bounds[c + 1], relu); \
    } while (0)
    MN_EACH_CHUNK(c, f) {
        if (f->relu)
            MN_FORWARD(1);
        else
            MN_FORWARD(0);
    }
#undef MN_FORWARD
}

void NAME(mn_mix_forward)(const REAL *x, const REAL *a, const REAL *shift,
                          const REAL *scale, const REAL *offset, int64_t relu,
                          REAL *y, int64_t n_channels, int64_t size,
                          int64_t k_total, const int64_t *bounds,
                          int64_t n_chunks, int64_t threads)
{
    NAME(mn_mix_forward_frame) f = {x, a, shift, scale, offset, relu, y,
                                    n_channels, size, k_total, bounds,
                                    n_chunks, 0};
    mn_team_run(NAME(mn_mix_forward_task), &f, threads);
}

/*
 * The gradient of the input (DESIGN §1.3, its terms expanded in x):
 *   gx = sum_k a_k (m_k u[k, c] g + w1[k, c] + w2[k, c] (x - shift)),
 * m_k the mask of component k (1 unless masked).  Lines [l0, l1) of P > 1
 * values.
 */
static inline __attribute__((always_inline)) void NAME(mn_mix_grad_x_lines)(
    const REAL *x, const REAL *a, const REAL *g, const REAL *shift,
    const REAL *sign, const REAL *thr, const REAL *u, const REAL *w1,
    const REAL *w2, REAL *gx, int64_t n_channels, int64_t size,
    int64_t k_total, int64_t l0, int64_t l1, const int masked)
{
    for (int64_t line = l0; line < l1; ++line) {
        const int64_t n = line / n_channels, c = line % n_channels;
        const REAL *xl = x + line * size, *gl = g + line * size;
        const REAL *an = a + n * k_total * size;
        REAL *gxl = gx + line * size;
        for (int64_t p0 = 0; p0 < size; p0 += MN_SEGMENT) {
            const int64_t len = size - p0 < MN_SEGMENT ? size - p0
                                                       : MN_SEGMENT;
            /* The centred x, and times the sign for the masks. */
            REAL xs[MN_SEGMENT], ms[MN_SEGMENT], acc[MN_SEGMENT];
#pragma omp simd
            for (int64_t j = 0; j < len; ++j) {
                const REAL xc = xl[p0 + j] - shift[c];
                xs[j] = xc;
                ms[j] = masked ? sign[c] * xc : 0;
                acc[j] = 0;
            }
            for (int64_t k = 0; k < k_total; ++k) {
                const int64_t kc = k * n_channels + c;
                const REAL uk = u[kc], w1k = w1[kc], w2k = w2[kc];
                const REAL t = masked ? thr[kc] : 0;
                const REAL *ak = an + k * size + p0;
#pragma omp simd
                for (int64_t j = 0; j < len; ++j) {
                    const REAL um = masked && !(ms[j] > t) ? 0 : uk;
                    acc[j] += ak[j] * (um * gl[p0 + j] + (w1k + w2k * xs[j]));
                }
            }
#pragma omp simd
            for (int64_t j = 0; j < len; ++j)
                gxl[p0 + j] = acc[j];
        }
    }
}

/* The gradient of NAME(mn_mix_grad_x_lines) at the points [l0, l1)
 * (P = 1); gx holds the running sums. */
static inline __attribute__((always_inline)) void NAME(mn_mix_grad_x_points)(
    const REAL *x, const REAL *a, const REAL *g, const REAL *shift,
    const REAL *sign, const REAL *thr, const REAL *u, const REAL *w1,
    const REAL *w2, REAL *gx, int64_t n_channels, int64_t k_total,
    int64_t l0, int64_t l1, const int masked)
{
    for (int64_t n = l0; n < l1; ++n) {
        const REAL *xn = x + n * n_channels, *gn = g + n * n_channels;
        REAL *gxn = gx + n * n_channels;
        for (int64_t c = 0; c < n_channels; ++c)
            gxn[c] = 0;
        for (int64_t k = 0; k < k_total; ++k) {
            const REAL ak = a[n * k_total + k];
            const REAL *uk = u + k * n_channels, *w1k = w1 + k * n_channels;
            const REAL *w2k = w2 + k * n_channels;
            const REAL *tk = masked ? thr + k * n_channels : thr;
#pragma omp simd
            for (int64_t c = 0; c < n_channels; ++c) {
                const REAL xc = xn[c] - shift[c];
                const REAL um = masked && !(sign[c] * xc > tk[c]) ? 0 : uk[c];
                gxn[c] += ak * (um * gn[c] + (w1k[c] + w2k[c] * xc));
            }
        }
    }
}

/* The gradient (NAME(mn_mix_grad_x_lines)) of every chunk of lines, on
 * `threads` threads; sign and thr NULL: no mask. */
typedef struct {
    const REAL *x, *a, *g, *shift, *sign, *thr, *u, *w1, *w2;
    REAL *gx;
    int64_t n_channels, size, k_total;
    MN_CHUNK_FIELDS;
} NAME(mn_mix_grad_x_frame);

MN_CLONES
static void NAME(mn_mix_grad_x_task)(void *frame, int64_t thread)
{
    NAME(mn_mix_grad_x_frame) *f = frame;
    (void)thread;
    /* The two forms, each compiled with its flag as a constant. */
#define MN_GRAD_X(masked) do { \
        if (f->size == 1) \
            NAME(mn_mix_grad_x_points)(f->x, f->a, f->g, f->shift, f->sign, \
                                       f->thr, f->u, f->w1, f->w2, f->gx, \
                                       f->n_channels, f->k_total, \
                                       f->bounds[c], f->bounds[c + 1], \
                                       masked); \
        else \
            NAME(mn_mix_grad_x_lines)(f->x, f->a, f->g, f->shift, f->sign, \
                                      f->thr, f->u, f->w1, f->w2, f->gx, \
                                      f->n_channels, f->size, f->k_total, \
                                      f->bounds[c], f->bounds[c + 1], \
                                      masked); \
    } while (0)
    MN_EACH_CHUNK(c, f) {
        if (f->sign == NULL)
            MN_GRAD_X(0);
        else
            MN_GRAD_X(1);
    }
#undef MN_GRAD_X
}

void NAME(mn_mix_grad_x)(const REAL *x, const REAL *a, const REAL *g,
                         const REAL *shift, const REAL *sign, const REAL *thr,
                         const REAL *u, const REAL *w1, const REAL *w2,
                         REAL *gx, int64_t n_channels, int64_t size,
                         int64_t k_total, const int64_t *bounds,
                         int64_t n_chunks, int64_t threads)
{
    NAME(mn_mix_grad_x_frame) f = {x, a, g, shift, sign, thr, u, w1, w2, gx,
                                   n_channels, size, k_total, bounds,
                                   n_chunks, 0};
    mn_team_run(NAME(mn_mix_grad_x_task), &f, threads);
}
