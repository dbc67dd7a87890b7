/* The name tagger's per-candidate scoring in C: context, feature hashes, weight sums.
 *
 * ``tag_scores(text, start, end, last, first, last_names, lower, table)`` is
 * ``Model.scores`` for packed weights (``_names.py``), integer for integer and float for
 * float (the tests hold it to the Python path over any text):
 *
 *   - the context is ``context()``'s: sentence-initial when the 24 characters before the
 *     token, right-stripped of spaces and tabs, are empty or end in a sentence mark; the two
 *     words before (in those 24 characters) and after (in the 24 after the token) as
 *     ``_WORD`` (``[A-Za-z0-9]+(?:['’][A-Za-z]+)?|[^\sA-Za-z0-9]``, ASCII ``\s``) finds them;
 *   - the 22 features are ``features()``'s strings, each hashed as ``zlib.crc32`` of its
 *     UTF-8 bytes (the CRC is zlib's, computed here) masked to 20 bits;
 *   - the three class sums add each feature's packed weight field by field (a feature not in
 *     ``table`` adds the bias, ``_NONE``) and are unpacked as ``unpack`` does.
 *
 * Lower-casing, ``isalpha``/``islower``/``istitle``/``isupper`` of a whole word call the str
 * methods themselves; one character's case and digit tests are CPython's own per-character
 * tests, which is what those methods do on one character. Returns None where the Python path
 * must decide instead (a string that has no strict UTF-8 form, a ``last`` outside -1..2,
 * tables that are not plain dicts and sets): it then runs, so the result never differs.
 * No state is kept between calls; nothing is cached.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define NATIVE_VERSION 1
#define CTX 24
#define MASK ((1u << 20) - 1)
#define FIELD 21
#define FMASK ((1ull << FIELD) - 1)
#define BIAS (1ll << 15)
#define SCALE 256.0
#define N_FEATURES 22

typedef struct {
    uint32_t crc_table[256];
    PyObject *s_lower, *s_isalpha, *s_islower, *s_istitle, *s_isupper;
    PyObject *bos, *eos, *l_tag;
} state_t;

static state_t *
get_state(PyObject *module)
{
    return (state_t *)PyModule_GetState(module);
}

/* zlib.crc32(buf, crc) */
static uint32_t
crc32_run(const state_t *st, uint32_t crc, const char *buf, Py_ssize_t len)
{
    crc ^= 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < len; i++) {
        crc = st->crc_table[(crc ^ (uint8_t)buf[i]) & 0xFFu] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}

static uint32_t
crc32_str(const state_t *st, uint32_t crc, const char *s)
{
    return crc32_run(st, crc, s, (Py_ssize_t)strlen(s));
}

/* crc of a str's strict UTF-8 bytes; -1 (with the error cleared) when it has none */
static int
crc32_obj(const state_t *st, uint32_t *crc, PyObject *s)
{
    Py_ssize_t n;
    const char *b = PyUnicode_AsUTF8AndSize(s, &n);
    if (b == NULL) {
        return -1;
    }
    *crc = crc32_run(st, *crc, b, n);
    return 0;
}

static inline int
ascii_alpha(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline int
ascii_alnum(Py_UCS4 c)
{
    return ascii_alpha(c) || (c >= '0' && c <= '9');
}

static inline int
ascii_space(Py_UCS4 c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static inline int
sentence_end(Py_UCS4 c)
{
    switch (c) {
    case '.': case '!': case '?': case ':': case ';': case '\n': case '"': case 0x201C:
    case '(': case '*': case '-': case 0x2022: case '>': case '|':
        return 1;
    default:
        return 0;
    }
}

/* The next ``_WORD`` token in [i, b): its bounds in *s, *e; 0 when there is none. */
static int
next_word(int kind, const void *data, Py_ssize_t i, Py_ssize_t b, Py_ssize_t *s, Py_ssize_t *e)
{
    while (i < b) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (ascii_space(c)) {
            i++;
            continue;
        }
        Py_ssize_t j = i + 1;
        if (ascii_alnum(c)) {
            while (j < b && ascii_alnum(PyUnicode_READ(kind, data, j))) {
                j++;
            }
            if (j + 1 < b) {
                Py_UCS4 q = PyUnicode_READ(kind, data, j);
                if ((q == '\'' || q == 0x2019) && ascii_alpha(PyUnicode_READ(kind, data, j + 1))) {
                    j += 2;
                    while (j < b && ascii_alpha(PyUnicode_READ(kind, data, j))) {
                        j++;
                    }
                }
            }
        }
        *s = i;
        *e = j;
        return 1;
    }
    return 0;
}

/* 1/0 from calling a no-argument str method returning bool; -1 on error */
static int
call_bool(PyObject *s, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(s, name);
    if (r == NULL) {
        return -1;
    }
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* ``shape(w)`` as a new str */
static PyObject *
shape(const state_t *st, PyObject *w)
{
    int alpha = call_bool(w, st->s_isalpha);
    if (alpha < 0) {
        return NULL;
    }
    if (alpha) {
        int t = call_bool(w, st->s_islower);
        if (t < 0) {
            return NULL;
        }
        if (t) {
            return PyUnicode_FromString("x");
        }
        t = call_bool(w, st->s_istitle);
        if (t < 0) {
            return NULL;
        }
        if (t) {
            return PyUnicode_FromString(PyUnicode_GET_LENGTH(w) == 1 ? "X" : "Xx");
        }
        t = call_bool(w, st->s_isupper);
        if (t < 0) {
            return NULL;
        }
        if (t) {
            return PyUnicode_FromString("X");
        }
    }
    Py_UCS4 out[6];
    int n = 0;
    const int kind = PyUnicode_KIND(w);
    const void *data = PyUnicode_DATA(w);
    const Py_ssize_t len = PyUnicode_GET_LENGTH(w);
    for (Py_ssize_t i = 0; i < len && n <= 6; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        Py_UCS4 c = Py_UNICODE_ISUPPER(ch)   ? 'X'
                    : Py_UNICODE_ISLOWER(ch) ? 'x'
                    : Py_UNICODE_ISDIGIT(ch) ? 'd'
                                             : ch;
        if (n == 0 || out[n - 1] != c) {
            if (n == 6) {
                break; /* a seventh run: only the first six are kept */
            }
            out[n++] = c;
        }
    }
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, out, n);
}

/* ``gaz.tags(w)`` as a new str */
static PyObject *
tags(const state_t *st, PyObject *w, PyObject *first, PyObject *lastn, PyObject *lower)
{
    PyObject *lw = PyObject_CallMethodNoArgs(w, st->s_lower);
    if (lw == NULL) {
        return NULL;
    }
    PyObject *f = PyDict_GetItemWithError(first, lw);
    PyObject *la = f != NULL || !PyErr_Occurred() ? PyDict_GetItemWithError(lastn, lw) : NULL;
    int c = la != NULL || !PyErr_Occurred() ? PySet_Contains(lower, lw) : -1;
    Py_DECREF(lw);
    if (c < 0) {
        return NULL;
    }
    PyObject *fs = f == NULL ? PyUnicode_FromString("-") : PyObject_Str(f);
    PyObject *ls = la == NULL ? PyUnicode_FromString("-") : PyObject_Str(la);
    PyObject *out = NULL;
    if (fs != NULL && ls != NULL) {
        out = PyUnicode_FromFormat("%U%U%s", fs, ls, c ? "c" : "");
    }
    Py_XDECREF(fs);
    Py_XDECREF(ls);
    return out;
}

/* the hashes of the 22 features, into h; 0 on success, 1 when Python must decide, -1 error */
static int
feature_hashes(const state_t *st, PyObject *w, int initial, PyObject *p1, PyObject *p2,
               PyObject *n1, PyObject *n2, PyObject *first, PyObject *lastn, PyObject *lower,
               int last, uint32_t *h)
{
    int rc = -1;
    PyObject *lw = NULL, *sh = NULL, *g = NULL, *p1l = NULL, *p2l = NULL, *n1l = NULL;
    PyObject *n2l = NULL, *p1s = NULL, *n1s = NULL, *p1g = NULL, *n1g = NULL;
    PyObject *s3 = NULL, *s2 = NULL, *p3 = NULL;
    const char *ini = initial ? "I" : "M";
    const Py_ssize_t wl = PyUnicode_GET_LENGTH(w);

    if (!(lw = PyObject_CallMethodNoArgs(w, st->s_lower)) || !(sh = shape(st, w)) ||
        !(g = tags(st, w, first, lastn, lower)) ||
        !(p1l = PyObject_CallMethodNoArgs(p1, st->s_lower)) ||
        !(p2l = PyObject_CallMethodNoArgs(p2, st->s_lower)) ||
        !(n1l = PyObject_CallMethodNoArgs(n1, st->s_lower)) ||
        !(n2l = PyObject_CallMethodNoArgs(n2, st->s_lower)) || !(p1s = shape(st, p1)) ||
        !(n1s = shape(st, n1))) {
        goto done;
    }
    /* a neighbour's gazetteer tags when it starts with a capital, else "l" */
    int up = PyUnicode_GET_LENGTH(p1) > 0 && Py_UNICODE_ISUPPER(PyUnicode_READ_CHAR(p1, 0));
    p1g = up ? tags(st, p1, first, lastn, lower) : Py_NewRef(st->l_tag);
    if (p1g == NULL) {
        goto done;
    }
    up = PyUnicode_GET_LENGTH(n1) > 0 && Py_UNICODE_ISUPPER(PyUnicode_READ_CHAR(n1, 0));
    n1g = up ? tags(st, n1, first, lastn, lower) : Py_NewRef(st->l_tag);
    if (n1g == NULL) {
        goto done;
    }
    const Py_ssize_t ll = PyUnicode_GET_LENGTH(lw);
    if (!(s3 = PyUnicode_Substring(lw, ll > 3 ? ll - 3 : 0, ll)) ||
        !(s2 = PyUnicode_Substring(lw, ll > 2 ? ll - 2 : 0, ll)) ||
        !(p3 = PyUnicode_Substring(lw, 0, ll < 3 ? ll : 3))) {
        goto done;
    }
    char num[32];
    uint32_t c;
    int k = 0;
#define PART(obj)                                                                                  \
    do {                                                                                           \
        if (crc32_obj(st, &c, (obj)) < 0) {                                                        \
            goto no_utf8;                                                                          \
        }                                                                                          \
    } while (0)
#define FEATURE(stmt)                                                                              \
    do {                                                                                           \
        c = 0;                                                                                     \
        stmt;                                                                                      \
        h[k++] = c & MASK;                                                                         \
    } while (0)
    FEATURE(c = crc32_str(st, c, "b"));
    FEATURE(c = crc32_str(st, c, "w="); PART(lw));
    FEATURE(c = crc32_str(st, c, "s3="); PART(s3));
    FEATURE(c = crc32_str(st, c, "s2="); PART(s2));
    FEATURE(c = crc32_str(st, c, "p3="); PART(p3));
    FEATURE(c = crc32_str(st, c, "sh="); PART(sh); c = crc32_str(st, c, ini));
    FEATURE(c = crc32_str(st, c, "g="); PART(g); c = crc32_str(st, c, ini));
    FEATURE(c = crc32_str(st, c, "gsh="); PART(g); PART(sh));
    FEATURE(c = crc32_str(st, c, "p1="); PART(p1l));
    FEATURE(c = crc32_str(st, c, "p2="); PART(p2l));
    FEATURE(c = crc32_str(st, c, "n1="); PART(n1l));
    FEATURE(c = crc32_str(st, c, "n2="); PART(n2l));
    FEATURE(c = crc32_str(st, c, "p1s="); PART(p1s); c = crc32_str(st, c, ini));
    FEATURE(c = crc32_str(st, c, "n1s="); PART(n1s));
    FEATURE(c = crc32_str(st, c, "p1g="); PART(p1g); PART(g));
    FEATURE(c = crc32_str(st, c, "n1g="); PART(n1g); PART(g));
    FEATURE(c = crc32_str(st, c, "p1w="); PART(p1l); c = crc32_str(st, c, "|"); PART(sh));
    FEATURE(c = crc32_str(st, c, "n1w="); PART(n1l); c = crc32_str(st, c, "|"); PART(sh));
    snprintf(num, sizeof num, "len=%d", (int)(wl < 12 ? wl : 12));
    FEATURE(c = crc32_str(st, c, num));
    snprintf(num, sizeof num, "pl=%d", last);
    FEATURE(c = crc32_str(st, c, num));
    snprintf(num, sizeof num, "plg=%d", last);
    FEATURE(c = crc32_str(st, c, num); PART(g));
    snprintf(num, sizeof num, "pls=%d", last);
    FEATURE(c = crc32_str(st, c, num); PART(sh); c = crc32_str(st, c, ini));
#undef FEATURE
#undef PART
    rc = k == N_FEATURES ? 0 : -1;
    if (rc < 0) {
        PyErr_SetString(PyExc_SystemError, "feature count");
    }
    goto done;
no_utf8:
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        goto done;
    }
    PyErr_Clear();
    rc = 1;
done:
    Py_XDECREF(lw);
    Py_XDECREF(sh);
    Py_XDECREF(g);
    Py_XDECREF(p1l);
    Py_XDECREF(p2l);
    Py_XDECREF(n1l);
    Py_XDECREF(n2l);
    Py_XDECREF(p1s);
    Py_XDECREF(n1s);
    Py_XDECREF(p1g);
    Py_XDECREF(n1g);
    Py_XDECREF(s3);
    Py_XDECREF(s2);
    Py_XDECREF(p3);
    return rc;
}

static PyObject *
tag_scores(PyObject *module, PyObject *args)
{
    const state_t *st = get_state(module);
    PyObject *text, *first, *lastn, *lower, *table;
    Py_ssize_t start, end;
    int last;
    if (!PyArg_ParseTuple(args, "UnniOOOO:tag_scores", &text, &start, &end, &last, &first,
                          &lastn, &lower, &table)) {
        return NULL;
    }
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (last < -1 || last > 2 || !PyDict_CheckExact(first) || !PyDict_CheckExact(lastn) ||
        !PyAnySet_Check(lower) || !PyDict_CheckExact(table) || start < 0 || end > n ||
        start >= end) {
        Py_RETURN_NONE; /* Python decides */
    }
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* context(): initial, and the words around */
    const Py_ssize_t lo = start > CTX ? start - CTX : 0;
    Py_ssize_t r = start;
    while (r > lo) {
        Py_UCS4 c = PyUnicode_READ(kind, data, r - 1);
        if (c != ' ' && c != '\t') {
            break;
        }
        r--;
    }
    const int initial = r == lo || sentence_end(PyUnicode_READ(kind, data, r - 1));
    Py_ssize_t ps[2] = {-1, -1}, pe[2] = {-1, -1}; /* the last two words before: [1] is last */
    Py_ssize_t s, e, i = lo;
    while (next_word(kind, data, i, start, &s, &e)) {
        ps[0] = ps[1];
        pe[0] = pe[1];
        ps[1] = s;
        pe[1] = e;
        i = e;
    }
    Py_ssize_t ns[2] = {-1, -1}, ne[2] = {-1, -1};
    const Py_ssize_t hi = end + CTX < n ? end + CTX : n;
    i = end;
    for (int k = 0; k < 2 && next_word(kind, data, i, hi, &s, &e); k++) {
        ns[k] = s;
        ne[k] = e;
        i = e;
    }
    PyObject *w = PyUnicode_Substring(text, start, end);
    PyObject *p1 = ps[1] < 0 ? Py_NewRef(st->bos) : PyUnicode_Substring(text, ps[1], pe[1]);
    PyObject *p2 = ps[0] < 0 ? Py_NewRef(st->bos) : PyUnicode_Substring(text, ps[0], pe[0]);
    PyObject *n1 = ns[0] < 0 ? Py_NewRef(st->eos) : PyUnicode_Substring(text, ns[0], ne[0]);
    PyObject *n2 = ns[1] < 0 ? Py_NewRef(st->eos) : PyUnicode_Substring(text, ns[1], ne[1]);
    PyObject *result = NULL;
    if (w == NULL || p1 == NULL || p2 == NULL || n1 == NULL || n2 == NULL) {
        goto done;
    }
    uint32_t h[N_FEATURES];
    int rc = feature_hashes(st, w, initial, p1, p2, n1, n2, first, lastn, lower, last, h);
    if (rc < 0) {
        goto done;
    }
    if (rc > 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    long long f0 = 0, f1 = 0, f2 = 0;
    for (int k = 0; k < N_FEATURES; k++) {
        PyObject *key = PyLong_FromUnsignedLong(h[k]);
        if (key == NULL) {
            goto done;
        }
        PyObject *v = PyDict_GetItemWithError(table, key);
        Py_DECREF(key);
        if (v == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            f0 += BIAS;
            f1 += BIAS;
            f2 += BIAS;
            continue;
        }
        unsigned long long x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) {
            goto done;
        }
        if ((x >> (2 * FIELD)) > FMASK) {
            PyErr_SetString(PyExc_ValueError, "packed weight out of range");
            goto done;
        }
        f0 += (long long)(x >> (2 * FIELD));
        f1 += (long long)((x >> FIELD) & FMASK);
        f2 += (long long)(x & FMASK);
    }
    const long long off = N_FEATURES * BIAS;
    result = Py_BuildValue("(ddd)", (double)(f0 - off) / SCALE, (double)(f1 - off) / SCALE,
                           (double)(f2 - off) / SCALE);
done:
    Py_XDECREF(w);
    Py_XDECREF(p1);
    Py_XDECREF(p2);
    Py_XDECREF(n1);
    Py_XDECREF(n2);
    return result;
}

static int
exec_module(PyObject *module)
{
    state_t *st = get_state(module);
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        st->crc_table[i] = c;
    }
    if (!(st->s_lower = PyUnicode_InternFromString("lower")) ||
        !(st->s_isalpha = PyUnicode_InternFromString("isalpha")) ||
        !(st->s_islower = PyUnicode_InternFromString("islower")) ||
        !(st->s_istitle = PyUnicode_InternFromString("istitle")) ||
        !(st->s_isupper = PyUnicode_InternFromString("isupper")) ||
        !(st->bos = PyUnicode_FromString("<s>")) || !(st->eos = PyUnicode_FromString("</s>")) ||
        !(st->l_tag = PyUnicode_FromString("l"))) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "VERSION", NATIVE_VERSION);
}

static int
traverse(PyObject *module, visitproc visit, void *arg)
{
    return 0; /* only strs: nothing a cycle can run through */
}

static int
clear(PyObject *module)
{
    state_t *st = get_state(module);
    Py_CLEAR(st->s_lower);
    Py_CLEAR(st->s_isalpha);
    Py_CLEAR(st->s_islower);
    Py_CLEAR(st->s_istitle);
    Py_CLEAR(st->s_isupper);
    Py_CLEAR(st->bos);
    Py_CLEAR(st->eos);
    Py_CLEAR(st->l_tag);
    return 0;
}

static void
free_module(void *module)
{
    clear((PyObject *)module);
}

static PyMethodDef methods[] = {
    {"tag_scores", tag_scores, METH_VARARGS,
     "tag_scores(text, start, end, last, first, last_names, lower, table) -> (O, PER, LOC) "
     "sums | None: Model.scores for packed weights."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native", "The name tagger's per-candidate scoring in C.",
    sizeof(state_t), methods, slots, traverse, clear, free_module,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}
