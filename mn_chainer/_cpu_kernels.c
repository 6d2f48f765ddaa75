/*
 * Fused CPU kernels of the mixture fit (mn_chainer.gmm on NumPy) and of the
 * Mixture Normalizing Transform (mn_chainer.functions on NumPy).
 *
 * Plain C99 (no Python or NumPy API in the kernels): the extension module
 * below exists so that setuptools builds and installs the shared library,
 * and gives the address of an array's data cheaply;
 * mn_chainer/cpu_kernels.py loads the library with ctypes, and it and
 * mn_chainer/transform_kernels.py check every argument and cut the rows
 * into chunks, which each kernel runs on several threads (_thread_team.h).
 * The kernels are instantiated for float and double from
 * _cpu_kernels_impl.h (the fit) and _transform_kernels_impl.h (the
 * transform).  On x86-64
 * Linux with GCC 12 or later every kernel is compiled for AVX-512
 * (x86-64-v4), AVX2 + FMA (x86-64-v3) and the baseline, the one the CPU
 * supports being picked when the library loads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) \
    && __GNUC__ >= 12 && defined(__linux__)
/* x86-64-v4: AVX-512; v3: AVX2 + FMA.  Chosen by the CPU's features. */
#define MN_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                 "default")))
#else
#define MN_CLONES
#endif

/* The threads of the passes, and their chunks of rows (MN_EACH_CHUNK). */
#include "_thread_team.h"

/*
 * Rows per tile of the E-step and M-step kernels.  The tile functions of
 * _cpu_kernels_impl.h name its rows one by one (x0..x3), and the scratch
 * size that mn_chainer/cpu_kernels.py allocates comes from
 * mn_scratch_size_*, which counts in tiles: change both together.
 */
#define MN_TILE 4
_Static_assert(MN_TILE == 4, "the tile functions unroll exactly 4 rows");

/*
 * Rows whose E+M sums are accumulated in REAL before they are added to the
 * double totals (a multiple of MN_TILE): float32 partial sums of 64 rows
 * lose at most 64 * 2^-24 = 4e-6 relative, the double totals nothing
 * measurable.
 */
#define MN_FLUSH_ROWS 64
_Static_assert(MN_FLUSH_ROWS % MN_TILE == 0,
               "partial sums are flushed after whole tiles");

/*
 * The widest vector (AVX-512) in bytes: the scratch rows of the E-step and
 * M-step loops are padded to a multiple of it and aligned on it, so that
 * those loops run whole, aligned vectors on every instruction set.
 */
#define MN_VECTOR_BYTES 64

/*
 * Points of a line that the transform's kernels handle at once
 * (_transform_kernels_impl.h): a segment's values stay in the L1 cache
 * while the components are looped over, and its REAL partial sums (at
 * most this many products) are added to double totals.
 */
#define MN_SEGMENT 64

/* float: the exact forms; double: the fused ones (_cpu_kernels_impl.h). */
#define REAL float
#define NAME(n) n##_f32
#define EXP expf
#define LOG logf
#define MN_FUSED_FORMS 0
#include "_cpu_kernels_impl.h"
#include "_transform_kernels_impl.h"
#undef REAL
#undef NAME
#undef EXP
#undef LOG
#undef MN_FUSED_FORMS

#define REAL double
#define NAME(n) n##_f64
#define EXP exp
#define LOG log
#define MN_FUSED_FORMS 1
#include "_cpu_kernels_impl.h"
#include "_transform_kernels_impl.h"
#undef REAL
#undef NAME
#undef EXP
#undef LOG
#undef MN_FUSED_FORMS

/*
 * address(a): the address of the data of a contiguous array (any object
 * with a contiguous buffer), for the ctypes calls of
 * mn_chainer/cpu_kernels.py: a tenth of the cost of reading it from
 * a.__array_interface__, which builds a dictionary at every call.
 */
static PyObject *mn_address(PyObject *module, PyObject *obj)
{
    Py_buffer view;
    (void)module;
    if (PyObject_GetBuffer(obj, &view, PyBUF_ANY_CONTIGUOUS) < 0)
        return NULL;
    PyObject *address = PyLong_FromVoidPtr(view.buf);
    PyBuffer_Release(&view);
    return address;
}

static PyMethodDef mn_cpu_kernels_methods[] = {
    {"address", mn_address, METH_O,
     "The address of the data of a contiguous array (for ctypes calls)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mn_cpu_kernels_module = {
    PyModuleDef_HEAD_INIT, "_cpu_kernels",
    "Fused CPU kernels of mn_chainer.gmm and of the transform (loaded with "
    "ctypes by mn_chainer.cpu_kernels).",
    -1, mn_cpu_kernels_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cpu_kernels(void)
{
    return PyModule_Create(&mn_cpu_kernels_module);
}
