/* The injection classifier's per-token loop in C: tokenise, look up, sum.
 *
 * ``stream_sums(text, ids, fused, uni, k, sep)`` is ``classifier._stream_sums_py`` token for
 * token and float for float (the pure-Python oracle the tests hold it to, bit for bit):
 *
 *   - tokens are ``\w+|\S`` exactly as Python's ``re`` reads them for a str pattern: a run of
 *     characters that are alphanumeric (``Py_UNICODE_ISALNUM``) or ``_``, else one character
 *     that is not whitespace (``Py_UNICODE_ISSPACE``), the tests ``_sre`` itself makes;
 *   - a token's id is ``ids.get(token, 0)``;
 *   - token i weighs ``fused.get(id_i * k + id_(i+1), uni[id_i])``, the last token
 *     ``uni[id_last] + 0.0``, and the running sum starts at 0.0 and adds them in order (the
 *     same IEEE double additions ``itertools.accumulate`` makes);
 *   - after each token that is the one character ``sep`` it reports the running sum and the
 *     number of tokens so far: the prefix sums at the unit bounds and the bounds.
 *
 * It returns ``(sums, bounds)``, each starting with the value before the first token (0.0, 0).
 * No state is kept between calls; nothing is cached.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define NATIVE_VERSION 2

static inline int
is_word(Py_UCS4 ch)
{
    if (ch < 128) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_';
    }
    return Py_UNICODE_ISALNUM(ch);
}

static inline int
is_space(Py_UCS4 ch)
{
    if (ch < 128) {
        return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f);
    }
    return Py_UNICODE_ISSPACE(ch);
}

/* ``ids.get(tok, 0)`` as a C integer; -1 with an exception set on failure. */
static long long
token_id(PyObject *ids, PyObject *tok)
{
    PyObject *v = PyDict_GetItemWithError(ids, tok);
    if (v == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    long long id = PyLong_AsLongLong(v);
    if (id == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (id < 0) {
        PyErr_SetString(PyExc_ValueError, "negative token id");
        return -1;
    }
    return id;
}

/* ``uni[id]`` as a double; sets an exception (and returns 0.0) when out of range or not a float. */
static inline double
unigram(PyObject *uni, long long id, int *failed)
{
    if (id >= PyList_GET_SIZE(uni)) {
        PyErr_SetString(PyExc_IndexError, "token id past the unigram table");
        *failed = 1;
        return 0.0;
    }
    PyObject *w = PyList_GET_ITEM(uni, (Py_ssize_t)id);
    if (!PyFloat_CheckExact(w)) {
        PyErr_SetString(PyExc_TypeError, "unigram weights must be floats");
        *failed = 1;
        return 0.0;
    }
    return PyFloat_AS_DOUBLE(w);
}

/* ``fused.get(a * k + b, uni[a])`` */
static double
weight(PyObject *fused, PyObject *uni, long long a, long long b, long long k, int *failed)
{
    PyObject *key = PyLong_FromLongLong(a * k + b);
    if (key == NULL) {
        *failed = 1;
        return 0.0;
    }
    PyObject *w = PyDict_GetItemWithError(fused, key);
    Py_DECREF(key);
    if (w == NULL) {
        if (PyErr_Occurred()) {
            *failed = 1;
            return 0.0;
        }
        return unigram(uni, a, failed);
    }
    if (!PyFloat_CheckExact(w)) {
        PyErr_SetString(PyExc_TypeError, "bigram weights must be floats");
        *failed = 1;
        return 0.0;
    }
    return PyFloat_AS_DOUBLE(w);
}

static int
append_point(PyObject *sums, PyObject *bounds, double at, Py_ssize_t n)
{
    PyObject *s = PyFloat_FromDouble(at);
    if (s == NULL) {
        return -1;
    }
    int rc = PyList_Append(sums, s);
    Py_DECREF(s);
    if (rc < 0) {
        return -1;
    }
    PyObject *b = PyLong_FromSsize_t(n);
    if (b == NULL) {
        return -1;
    }
    rc = PyList_Append(bounds, b);
    Py_DECREF(b);
    return rc;
}

static PyObject *
stream_sums(PyObject *module, PyObject *args)
{
    PyObject *text, *ids, *fused, *uni;
    long long k;
    unsigned int sep;
    if (!PyArg_ParseTuple(args, "UO!O!O!LI:stream_sums", &text, &PyDict_Type, &ids, &PyDict_Type,
                          &fused, &PyList_Type, &uni, &k, &sep)) {
        return NULL;
    }
    if (k <= 0 || k > (1LL << 31)) {
        PyErr_SetString(PyExc_ValueError, "k out of range");
        return NULL;
    }
    PyObject *sums = PyList_New(0);
    PyObject *bounds = PyList_New(0);
    if (sums == NULL || bounds == NULL || append_point(sums, bounds, 0.0, 0) < 0) {
        goto fail;
    }
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    double at = 0.0;
    long long prev = -1; /* the id of the token whose weight waits for the next one */
    int prev_sep = 0;
    Py_ssize_t done = 0; /* tokens whose weight is in ``at`` */
    int failed = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (is_space(ch)) {
            i++;
            continue;
        }
        Py_ssize_t j = i + 1;
        if (is_word(ch)) {
            while (j < n && is_word(PyUnicode_READ(kind, data, j))) {
                j++;
            }
        }
        PyObject *tok = PyUnicode_Substring(text, i, j);
        if (tok == NULL) {
            goto fail;
        }
        long long id = token_id(ids, tok);
        Py_DECREF(tok);
        if (id < 0) {
            goto fail;
        }
        if (prev >= 0) {
            at += weight(fused, uni, prev, id, k, &failed);
            if (failed) {
                goto fail;
            }
            done++;
            if (prev_sep && append_point(sums, bounds, at, done) < 0) {
                goto fail;
            }
        }
        prev = id;
        prev_sep = j == i + 1 && ch == (Py_UCS4)sep;
        i = j;
    }
    if (prev >= 0) {
        at += unigram(uni, prev, &failed) + 0.0;
        if (failed) {
            goto fail;
        }
        done++;
        if (prev_sep && append_point(sums, bounds, at, done) < 0) {
            goto fail;
        }
    }
    return Py_BuildValue("(NN)", sums, bounds);
fail:
    Py_XDECREF(sums);
    Py_XDECREF(bounds);
    return NULL;
}

/* ``InjectionClassifier.verdict``'s window loop: for k = 1..width, the best of every window of
 * k units, z = (ps[i+k] - ps[i]) / sqrt(pc[i+k] - pc[i]) (-inf when it holds no feature); the
 * first window of the best z of each k replaces ``best`` when strictly larger. Returns
 * ``(best, start, stop)``, start -1 when no window beat ``best``. The same float operations
 * in the same order as the Python loop (``max`` keeps the first of equals; ``sqrt`` is IEEE). */
static PyObject *
best_window(PyObject *module, PyObject *args)
{
    PyObject *ps, *pc;
    Py_ssize_t width;
    double best;
    if (!PyArg_ParseTuple(args, "O!O!nd:best_window", &PyList_Type, &ps, &PyList_Type, &pc, &width,
                          &best)) {
        return NULL;
    }
    const Py_ssize_t n = PyList_GET_SIZE(ps);
    if (PyList_GET_SIZE(pc) != n) {
        PyErr_SetString(PyExc_ValueError, "sums and counts differ in length");
        return NULL;
    }
    double *s = PyMem_Malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    long long *c = PyMem_Malloc(sizeof(long long) * (size_t)(n > 0 ? n : 1));
    if (s == NULL || c == NULL) {
        PyMem_Free(s);
        PyMem_Free(c);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(ps, i);
        PyObject *y = PyList_GET_ITEM(pc, i);
        if (!PyFloat_CheckExact(x) || !PyLong_CheckExact(y)) {
            PyMem_Free(s);
            PyMem_Free(c);
            PyErr_SetString(PyExc_TypeError, "sums must be floats and counts ints");
            return NULL;
        }
        s[i] = PyFloat_AS_DOUBLE(x);
        c[i] = PyLong_AsLongLong(y);
        if (c[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(s);
            PyMem_Free(c);
            return NULL;
        }
    }
    Py_ssize_t start = -1, stop = -1;
    for (Py_ssize_t k = 1; k <= width && k < n; k++) {
        double zmax = 0.0;
        Py_ssize_t at = 0;
        for (Py_ssize_t i = 0; i + k < n; i++) {
            long long d = c[i + k] - c[i];
            double z = d > 0 ? (s[i + k] - s[i]) / sqrt((double)d) : -Py_HUGE_VAL;
            if (i == 0 || z > zmax) {
                zmax = z;
                at = i;
            }
        }
        if (zmax > best) {
            best = zmax;
            start = at;
            stop = at + k;
        }
    }
    PyMem_Free(s);
    PyMem_Free(c);
    return Py_BuildValue("(dnn)", best, start, stop);
}

static PyMethodDef methods[] = {
    {"stream_sums", stream_sums, METH_VARARGS,
     "stream_sums(text, ids, fused, uni, k, sep) -> (sums, bounds): the classifier's token loop."},
    {"best_window", best_window, METH_VARARGS,
     "best_window(sums, counts, width, best) -> (best, start, stop): the verdict's window loop."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The injection classifier's token loop in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", NATIVE_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
