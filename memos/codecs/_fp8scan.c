/*
 * memos._fp8scan: inner-product scan over float8 (e4m3fn) codes with a per-row scale.
 *
 *   ip_scan(codes, scales, query, out)               out[i] = scales[i] * <query, e4m3(codes[i])>
 *   ip_scan_subset(codes, scales, query, rows, out)  out[k] = the same for row rows[k]
 *
 * Decoding: for a byte b, the 16-bit pattern h = ((b & 0x80) << 8) | ((b & 0x7F) << 7) read as
 * IEEE fp16 equals e4m3(b) / 256, exactly for every finite code including subnormals (the two
 * formats differ only in exponent bias, 7 vs 15, and field widths). So the AVX2 path widens
 * bytes to 16 bits, builds h with a shift and a mask, lets F16C turn it into fp32 and
 * accumulates with FMA; the factor 256 is applied once per row at the end rather than to the
 * query, so a huge query cannot overflow. The scalar path uses a 256-entry table built from
 * the same bit pattern, so both paths agree on every byte, including the NaN codes 0x7F/0xFF
 * (encoders never produce them; here they decode as +-480 instead of poisoning a whole row).
 *
 * Inputs are buffer-protocol objects (numpy arrays); numpy's C API is not needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define FP8_HAVE_AVX2 1
#include <immintrin.h>
#define AVX2_TARGET __attribute__((target("avx2,f16c,fma")))
#else
#define FP8_HAVE_AVX2 0
#endif

/* Rows handled together: they share every query load, and eight independent accumulators
 * (two per row) keep FMA latency off the critical path. What is left is decode throughput
 * (one F16C conversion per 8 values): ~15 GB/s of codes per core from cache on Zen 4,
 * against ~25-30 GB/s of DRAM read bandwidth, so this is close to as fast as AVX2 allows. */
#define ROWS_PER_STEP 4

typedef void (*scan_fn)(const uint8_t *codes, Py_ssize_t d, const float *scales,
                        const float *query, const int64_t *rows, Py_ssize_t m, float *out);

/* e4m3(b) / 256 for every byte b, decoded through the fp16 bit pattern (see above). */
static float h_lut[256];

static float
half_bits_to_float(uint16_t h)
{
    /* Portable fp16 -> fp32; only used to fill the table, so speed does not matter. */
    int sign = (h >> 15) & 1;
    int exp = (h >> 10) & 0x1F;
    int mant = h & 0x3FF;
    float v;
    if (exp == 0) {
        v = ldexpf((float)mant, -24);
    }
    else {
        /* exp == 31 (inf/NaN) cannot arise: bit 14 of h is always clear, so exp <= 15. */
        v = ldexpf((float)(mant | 0x400), exp - 25);
    }
    return sign ? -v : v;
}

static uint16_t
e4m3_to_half_bits(unsigned b)
{
    return (uint16_t)(((b & 0x80u) << 8) | ((b & 0x7Fu) << 7));
}

static void
init_lut(void)
{
    for (unsigned b = 0; b < 256; b++) {
        h_lut[b] = half_bits_to_float(e4m3_to_half_bits(b));
    }
}

#define ROW_INDEX(rows, i) ((rows) != NULL ? (Py_ssize_t)(rows)[i] : (i))

/* ---------------------------------------------------------------- scalar fallback */

static void
scan_scalar(const uint8_t *codes, Py_ssize_t d, const float *scales, const float *query,
            const int64_t *rows, Py_ssize_t m, float *out)
{
    Py_ssize_t i = 0;
    for (; i + ROWS_PER_STEP <= m; i += ROWS_PER_STEP) {
        Py_ssize_t k0 = ROW_INDEX(rows, i), k1 = ROW_INDEX(rows, i + 1);
        Py_ssize_t k2 = ROW_INDEX(rows, i + 2), k3 = ROW_INDEX(rows, i + 3);
        const uint8_t *r0 = codes + k0 * d, *r1 = codes + k1 * d;
        const uint8_t *r2 = codes + k2 * d, *r3 = codes + k3 * d;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (Py_ssize_t j = 0; j < d; j++) {
            float q = query[j];
            a0 += q * h_lut[r0[j]];
            a1 += q * h_lut[r1[j]];
            a2 += q * h_lut[r2[j]];
            a3 += q * h_lut[r3[j]];
        }
        out[i] = scales[k0] * (a0 * 256.0f);
        out[i + 1] = scales[k1] * (a1 * 256.0f);
        out[i + 2] = scales[k2] * (a2 * 256.0f);
        out[i + 3] = scales[k3] * (a3 * 256.0f);
    }
    for (; i < m; i++) {
        Py_ssize_t k = ROW_INDEX(rows, i);
        const uint8_t *r = codes + k * d;
        float a = 0.0f;
        for (Py_ssize_t j = 0; j < d; j++) {
            a += query[j] * h_lut[r[j]];
        }
        out[i] = scales[k] * (a * 256.0f);
    }
}

/* ---------------------------------------------------------------- AVX2 + F16C + FMA */

#if FP8_HAVE_AVX2

/* 16 codes -> 16 fp16 patterns. Sign-extending the byte to 16 bits and shifting left by 7
 * puts the magnitude bits at 7..13 and copies of the sign at 14 and 15; the mask clears the
 * stray copy at 14. One widening shuffle, one shift, one AND for 16 values. */
AVX2_TARGET static inline __m256i
codes16_to_half(const uint8_t *p, __m256i mask)
{
    __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_slli_epi16(w, 7), mask);
}

AVX2_TARGET static inline __m128i
codes8_to_half(const uint8_t *p, __m128i mask)
{
    __m128i w = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
    return _mm_and_si128(_mm_slli_epi16(w, 7), mask);
}

AVX2_TARGET static inline float
hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row's 16-lane step: two independent accumulators per row hide FMA latency. */
#define STEP16(r, lo, hi)                                                            \
    do {                                                                             \
        __m256i h_ = codes16_to_half((r) + j, mask16);                               \
        lo = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h_)), qa, lo);   \
        hi = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h_, 1)), qb, hi); \
    } while (0)

AVX2_TARGET static void
dot4_avx2(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3,
          const float *query, Py_ssize_t d, float res[4])
{
    const __m256i mask16 = _mm256_set1_epi16((short)0xBF80);
    const __m128i mask8 = _mm_set1_epi16((short)0xBF80);
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0;
    __m256 u0 = l0, u1 = l0, u2 = l0, u3 = l0;
    Py_ssize_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m256 qa = _mm256_loadu_ps(query + j);
        __m256 qb = _mm256_loadu_ps(query + j + 8);
        STEP16(r0, l0, u0);
        STEP16(r1, l1, u1);
        STEP16(r2, l2, u2);
        STEP16(r3, l3, u3);
    }
    if (j + 8 <= d) {
        __m256 qa = _mm256_loadu_ps(query + j);
        l0 = _mm256_fmadd_ps(_mm256_cvtph_ps(codes8_to_half(r0 + j, mask8)), qa, l0);
        l1 = _mm256_fmadd_ps(_mm256_cvtph_ps(codes8_to_half(r1 + j, mask8)), qa, l1);
        l2 = _mm256_fmadd_ps(_mm256_cvtph_ps(codes8_to_half(r2 + j, mask8)), qa, l2);
        l3 = _mm256_fmadd_ps(_mm256_cvtph_ps(codes8_to_half(r3 + j, mask8)), qa, l3);
        j += 8;
    }
    float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
    for (; j < d; j++) {
        float q = query[j];
        t0 += q * h_lut[r0[j]];
        t1 += q * h_lut[r1[j]];
        t2 += q * h_lut[r2[j]];
        t3 += q * h_lut[r3[j]];
    }
    res[0] = hsum256(_mm256_add_ps(l0, u0)) + t0;
    res[1] = hsum256(_mm256_add_ps(l1, u1)) + t1;
    res[2] = hsum256(_mm256_add_ps(l2, u2)) + t2;
    res[3] = hsum256(_mm256_add_ps(l3, u3)) + t3;
}

/* Rows prefetched ahead of the ones being scored. The hardware prefetcher alone left the
 * scan ~30% slower at 100k x 384 (it does not run far enough ahead of four interleaved
 * streams); eight rows (two steps) ahead measured best, and it also covers the random rows
 * of a subset scan, which no hardware prefetcher can predict. */
#define PREFETCH_ROWS 8

AVX2_TARGET static inline void
prefetch_row(const uint8_t *row, Py_ssize_t d)
{
    for (Py_ssize_t b = 0; b < d; b += 64) {
        _mm_prefetch((const char *)(row + b), _MM_HINT_T0);
    }
    _mm_prefetch((const char *)(row + d - 1), _MM_HINT_T0);
}

AVX2_TARGET static void
scan_avx2(const uint8_t *codes, Py_ssize_t d, const float *scales, const float *query,
          const int64_t *rows, Py_ssize_t m, float *out)
{
    float res[4];
    Py_ssize_t i = 0;
    for (; i + ROWS_PER_STEP <= m; i += ROWS_PER_STEP) {
        Py_ssize_t k0 = ROW_INDEX(rows, i), k1 = ROW_INDEX(rows, i + 1);
        Py_ssize_t k2 = ROW_INDEX(rows, i + 2), k3 = ROW_INDEX(rows, i + 3);
        if (i + PREFETCH_ROWS + ROWS_PER_STEP <= m && d > 0) {
            for (Py_ssize_t t = 0; t < ROWS_PER_STEP; t++) {
                prefetch_row(codes + ROW_INDEX(rows, i + PREFETCH_ROWS + t) * d, d);
            }
        }
        dot4_avx2(codes + k0 * d, codes + k1 * d, codes + k2 * d, codes + k3 * d, query, d,
                  res);
        out[i] = scales[k0] * (res[0] * 256.0f);
        out[i + 1] = scales[k1] * (res[1] * 256.0f);
        out[i + 2] = scales[k2] * (res[2] * 256.0f);
        out[i + 3] = scales[k3] * (res[3] * 256.0f);
    }
    if (i < m) {
        /* Pad the last group with repeats of its first row rather than a second code path. */
        Py_ssize_t k[ROWS_PER_STEP];
        Py_ssize_t left = m - i;
        for (Py_ssize_t t = 0; t < ROWS_PER_STEP; t++) {
            k[t] = ROW_INDEX(rows, i + (t < left ? t : 0));
        }
        dot4_avx2(codes + k[0] * d, codes + k[1] * d, codes + k[2] * d, codes + k[3] * d, query,
                  d, res);
        for (Py_ssize_t t = 0; t < left; t++) {
            out[i + t] = scales[k[t]] * (res[t] * 256.0f);
        }
    }
}

static int
cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

#endif /* FP8_HAVE_AVX2 */

/* ---------------------------------------------------------------- dispatch */

static scan_fn active_scan = scan_scalar;
static const char *active_name = "scalar";

static int
select_backend(const char *name)
{
    if (strcmp(name, "scalar") == 0) {
        active_scan = scan_scalar;
        active_name = "scalar";
        return 0;
    }
#if FP8_HAVE_AVX2
    if (strcmp(name, "avx2") == 0 || strcmp(name, "auto") == 0) {
        if (cpu_has_avx2()) {
            active_scan = scan_avx2;
            active_name = "avx2";
            return 0;
        }
        if (strcmp(name, "auto") == 0) {
            return select_backend("scalar");
        }
        return -1;
    }
#else
    if (strcmp(name, "auto") == 0) {
        return select_backend("scalar");
    }
#endif
    return -1;
}

/* ---------------------------------------------------------------- argument checking */

/* Accepts a native-order format of one item code: "f", "@f", "=f", and "<f" on a little-endian
 * host, as numpy and memoryview spell them. */
static int
format_is(const char *format, const char *codes)
{
    if (format == NULL) {
        /* The exporter did not say; PyBUF_FORMAT asks for it, so this means unsigned bytes. */
        return strchr(codes, 'B') != NULL;
    }
    if (*format == '@' || *format == '=') {
        format++;
    }
    else if (*format == '<' || *format == '>' || *format == '!') {
        const uint16_t one = 1;
        int little = *(const uint8_t *)&one == 1;
        if ((*format == '<') != little) {
            return 0;
        }
        format++;
    }
    return format[0] != '\0' && format[1] == '\0' && strchr(codes, format[0]) != NULL;
}

/* Gets a C-contiguous buffer of `ndim` dimensions and the given item type, or sets
 * TypeError (not a buffer, wrong item type) / ValueError (layout, dimensions, read-only). */
static int
get_buffer(PyObject *obj, Py_buffer *view, const char *name, int writable, const char *codes,
           Py_ssize_t itemsize, const char *dtype, int ndim)
{
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s array (buffer protocol), not %.100s",
                     name, dtype, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s %s array: %S", name,
                     writable ? " writable" : "", dtype, exc);
        Py_XDECREF(exc);
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s %s array: %S", name,
                     writable ? " writable" : "", dtype, value != NULL ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
#endif
        return -1;
    }
    if (view->itemsize != itemsize || !format_is(view->format, codes)) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s, got format %s (itemsize %zd)",
                     name, dtype, view->format != NULL ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-dimensional, got %d dimensions", name,
                     ndim, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static Py_ssize_t
dim(const Py_buffer *view, int axis)
{
    /* shape is NULL only for a 1-D buffer exported without PyBUF_ND, which C_CONTIGUOUS
     * excludes; guard anyway so a strange exporter cannot crash us. */
    if (view->shape == NULL) {
        return axis == 0 ? view->len / (view->itemsize > 0 ? view->itemsize : 1) : 1;
    }
    return view->shape[axis];
}

static void
release_all(Py_buffer *views, int count)
{
    for (int i = 0; i < count; i++) {
        PyBuffer_Release(&views[i]);
    }
}

/* Shared by both entry points; rows_obj is NULL for a full scan. */
static PyObject *
do_scan(PyObject *codes_obj, PyObject *scales_obj, PyObject *query_obj, PyObject *rows_obj,
        PyObject *out_obj)
{
    enum { CODES, SCALES, QUERY, OUT, ROWS, NVIEWS };
    Py_buffer v[NVIEWS];
    int got = 0;
    if (get_buffer(codes_obj, &v[CODES], "codes", 0, "B", 1, "uint8", 2) < 0) {
        goto fail;
    }
    got++;
    if (get_buffer(scales_obj, &v[SCALES], "scales", 0, "f", 4, "float32", 1) < 0) {
        goto fail;
    }
    got++;
    if (get_buffer(query_obj, &v[QUERY], "query", 0, "f", 4, "float32", 1) < 0) {
        goto fail;
    }
    got++;
    if (get_buffer(out_obj, &v[OUT], "out", 1, "f", 4, "float32", 1) < 0) {
        goto fail;
    }
    got++;
    if (rows_obj != NULL) {
        if (get_buffer(rows_obj, &v[ROWS], "rows", 0, "lq", 8, "int64", 1) < 0) {
            goto fail;
        }
        got++;
    }

    Py_ssize_t n = dim(&v[CODES], 0), d = dim(&v[CODES], 1);
    Py_ssize_t m = rows_obj != NULL ? dim(&v[ROWS], 0) : n;
    if (dim(&v[SCALES], 0) != n) {
        PyErr_Format(PyExc_ValueError, "scales has %zd entries, codes has %zd rows",
                     dim(&v[SCALES], 0), n);
        goto fail;
    }
    if (dim(&v[QUERY], 0) != d) {
        PyErr_Format(PyExc_ValueError, "query has dimension %zd, codes have %zd",
                     dim(&v[QUERY], 0), d);
        goto fail;
    }
    if (dim(&v[OUT], 0) != m) {
        PyErr_Format(PyExc_ValueError, "out has %zd entries, expected %zd", dim(&v[OUT], 0), m);
        goto fail;
    }
    const int64_t *rows = rows_obj != NULL ? (const int64_t *)v[ROWS].buf : NULL;
    for (Py_ssize_t k = 0; k < m && rows != NULL; k++) {
        if (rows[k] < 0 || rows[k] >= (int64_t)n) {
            PyErr_Format(PyExc_IndexError, "rows[%zd] = %lld is out of range for %zd rows", k,
                         (long long)rows[k], n);
            goto fail;
        }
    }

    scan_fn scan = active_scan;
    Py_BEGIN_ALLOW_THREADS
    scan((const uint8_t *)v[CODES].buf, d, (const float *)v[SCALES].buf,
         (const float *)v[QUERY].buf, rows, m, (float *)v[OUT].buf);
    Py_END_ALLOW_THREADS

    release_all(v, got);
    Py_RETURN_NONE;

fail:
    release_all(v, got);
    return NULL;
}

/* ---------------------------------------------------------------- module */

static PyObject *
ip_scan(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "ip_scan(codes, scales, query, out) takes 4 arguments, "
                     "got %zd", nargs);
        return NULL;
    }
    return do_scan(args[0], args[1], args[2], NULL, args[3]);
}

static PyObject *
ip_scan_subset(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "ip_scan_subset(codes, scales, query, rows, out) takes 5 arguments, "
                     "got %zd", nargs);
        return NULL;
    }
    return do_scan(args[0], args[1], args[2], args[3], args[4]);
}

static PyObject *
backend(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(active_name);
}

static PyObject *
set_backend(PyObject *Py_UNUSED(self), PyObject *arg)
{
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "backend name must be a str");
        }
        return NULL;
    }
    if (select_backend(name) < 0) {
        PyErr_Format(PyExc_ValueError,
                     "backend %R is not available here (choose 'auto', 'avx2' or 'scalar')", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"ip_scan", (PyCFunction)(void (*)(void))ip_scan, METH_FASTCALL,
     "ip_scan(codes, scales, query, out) -> None\n\n"
     "out[i] = scales[i] * sum_j query[j] * e4m3(codes[i, j]). codes: uint8 [n, d] holding\n"
     "float8_e4m3fn bit patterns; scales, out: float32 [n]; query: float32 [d]; all\n"
     "C-contiguous. Releases the GIL while scanning."},
    {"ip_scan_subset", (PyCFunction)(void (*)(void))ip_scan_subset, METH_FASTCALL,
     "ip_scan_subset(codes, scales, query, rows, out) -> None\n\n"
     "Like ip_scan for the int64 row indices in rows only: out[k] scores row rows[k];\n"
     "out is float32 [len(rows)]. IndexError for a row outside [0, n)."},
    {"backend", backend, METH_NOARGS, "backend() -> str: the kernel in use, 'avx2' or 'scalar'."},
    {"_set_backend", set_backend, METH_O,
     "_set_backend(name) -> None: force 'scalar', 'avx2' or 'auto' (for tests and benchmarks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "memos._fp8scan",
    "Inner-product scan over float8 e4m3 codes with per-row scales (AVX2/F16C or scalar).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fp8scan(void)
{
    init_lut();
    select_backend("auto");
    return PyModule_Create(&module);
}
