# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled dispatch core: the same rule, PRNG and float arithmetic as the reference twin ``_dispatch_py.py``."""
from libc.math cimport INFINITY, NAN, floor
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from operator import index as _index

from ._common import DispatchStats, NoEndpointAvailable, UnmatchedRecord, initial_state
from ._common import EXCLUDE_RETRIES as _PY_EXCLUDE_RETRIES

__all__ = ["Dispatcher", "SlidingCount", "EndpointTally", "Lane", "noop"]

cdef extern from *:
    """
    #include <stdint.h>
    /* splitmix64 (Steele, Lea, Flood 2014), as a double in [0, 1): (x >> 11) * 2^-53. */
    static inline double tm_splitmix64_double(uint64_t *state) {
        uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z = z ^ (z >> 31);
        return (double)(z >> 11) * (1.0 / 9007199254740992.0);
    }
    /* First index i in [0, n] with a[i] > u (a sorted ascending, n >= 1): branch-free bisection, so the
       cost at 1,024 endpoints is ~10 predictable steps instead of ~10 coin-flip branches. */
    static inline Py_ssize_t tm_upper_bound(const double *a, Py_ssize_t n, double u) {
        const double *base = a;
        while (n > 1) {
            Py_ssize_t half = n >> 1;
            base = (base[half] <= u) ? base + half : base;
            n -= half;
        }
        return (base - a) + (*base <= u);
    }
    """
    double tm_splitmix64_double(uint64_t* state) noexcept nogil
    Py_ssize_t tm_upper_bound(const double* a, Py_ssize_t n, double u) noexcept nogil

cdef int EXCLUDE_RETRIES = _PY_EXCLUDE_RETRIES


def noop():
    """Does nothing: the floor for call-overhead benchmarks (one call into a compiled function)."""


cdef inline bint _eligible(const Endpoint* e) noexcept nogil:
    return e.available and e.weight > 0.0 and not e.removed


cdef class Dispatcher:
    """Weighted, load-aware choice of an endpoint (compiled build; ``_dispatch_py.Dispatcher`` is the reference).

    Pick rule (weighted two choices, load-normalised):
        draw two candidates a, b independently with probability weight_i / sum(eligible weights), each by
        bisection over the cumulative effective weights (effective weight = weight if available else 0);
        keep b only when in_flight_b * weight_a < in_flight_a * weight_b (b carries less load per unit of
        share), otherwise a. Idle endpoints tie, so the first draw wins and picks follow the weight shares
        exactly; an endpoint with more requests in flight than its share loses the comparison.
        Cost: O(log n) per pick, O(1) per record, O(n) per set_weights / set_available / resize / remove /
        reuse (they rebuild the cumulative array).
    Churn (stable slots; why not compaction: ``_dispatch_py``'s module docstring): ``remove(i)`` takes slot i out
        of every rule above (effective weight 0 whatever its weight and availability, never an overflow or scan
        target), keeps its counters, and lets the records of its requests still out land; ``reuse(i)`` gives a
        removed slot with none in flight fresh state (weight 0, available, no limit, no external load, zero
        counters) for a new endpoint.
    Limits (``set_limits``, 0 = none): when the chosen endpoint has ``limit`` or more requests in flight, the
        other candidate is taken if it is under its limit or has none, else one draw by weight over the eligible,
        not excluded endpoints that have a limit and are under it (one linear scan, O(n)); when there is none the
        choice stands (the request queues where the weights say). An endpoint without a limit takes overflow only
        as a weighted candidate: the controller gives none to endpoints it cannot vouch for (unknown or too slow
        service time, on probation), and their small trial weight must not turn into all the overflow. The controller sets a limit at the depth past which a new
        request would wait beyond the SLO, so a queue that grew between two ticks overflows at once.
    External load (``set_external``, 0 = none): other clients' requests in flight at each endpoint, as a control
        plane tells its followers. They count beside this dispatcher's own in the load comparison and against the
        limits: load_i = in_flight_i + external_i replaces in_flight_i in both rules above, so that the clients of
        one plane share an endpoint's limit instead of each filling it.
    Exclusion: each candidate is redrawn up to EXCLUDE_RETRIES times while it is in ``exclude``; after that
        it is drawn by one linear scan over the endpoints that are eligible and not excluded (O(n)).
        Indexes in ``exclude`` outside [0, n_endpoints) are ignored (such an endpoint cannot be picked).
    Record (EWMA with alpha = ewma_alpha):
        error_rate     <- alpha * (0 if ok else 1) + (1 - alpha) * error_rate          (starts at 0.0)
        ewma_latency_s <- alpha * latency_s + (1 - alpha) * ewma_latency_s              (successes only;
                          the first success sets it; NaN before that: a fast failure must not look fast)
    PRNG: splitmix64; a draw in [0, 1) is (x >> 11) * 2**-53. ``seed=None`` seeds from os.urandom.

    Thread safety: no method releases the GIL, and between the first read and the last write of shared state
    no method calls back into Python (no object allocation, no user code: arguments are converted to C values
    before, result objects are built after, stats() copies the C arrays before it builds tuples). So each
    method is atomic with respect to other Python threads, with no lock. This rests on the GIL: the module does
    not declare free-threading support, so a free-threaded CPython re-enables the GIL when it imports it.
    """

    def __cinit__(self, *args, **kwargs):
        self._n = 0
        self._ep = NULL
        self._cum = NULL
        self._total = 0.0
        self._last = -1

    def __dealloc__(self):
        free(self._ep)
        free(self._cum)

    def __init__(self, n_endpoints, *, seed=None, ewma_alpha=0.2):
        cdef Py_ssize_t n = _index(n_endpoints)
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        cdef double alpha = float(ewma_alpha)
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha!r}")
        self._state = initial_state(seed)
        self._alpha = alpha
        self._set_size(n)
        self._rebuild()

    # ---- configuration -------------------------------------------------------------------------------------

    @property
    def n_endpoints(self):
        return self._n

    @property
    def ewma_alpha(self):
        return self._alpha

    def set_weights(self, weights):
        """Desired traffic shares (non-negative, finite; 0 = no traffic). ValueError names a bad index."""
        values = [float(w) for w in weights]
        cdef Py_ssize_t n = len(values), i
        cdef double w
        if n != self._n:
            raise ValueError(f"weights has length {n}, expected {self._n}")
        for i in range(n):
            w = values[i]
            if w != w or w == INFINITY or w == -INFINITY or w < 0.0:
                raise ValueError(f"weights[{i}] = {values[i]!r}: must be finite and >= 0")
        cdef double* tmp = <double*>malloc((n if n > 0 else 1) * sizeof(double))
        if tmp == NULL:
            raise MemoryError()
        for i in range(n):
            tmp[i] = values[i]
        # from here to the end: no Python calls
        for i in range(n):
            self._ep[i].weight = tmp[i]
        free(tmp)
        self._rebuild()

    def set_limits(self, limits):
        """In-flight limits per endpoint (ints >= 0; 0 = no limit), see the class docstring. ValueError names a bad
        index."""
        values = [_index(x) for x in limits]
        if len(values) != self._n:
            raise ValueError(f"limits has length {len(values)}, expected {self._n}")
        for k, v in enumerate(values):
            if v < 0:
                raise ValueError(f"limits[{k}] = {v!r}: must be >= 0")
        cdef Py_ssize_t i
        for i in range(self._n):
            self._ep[i].limit = values[i]

    def limits(self):
        """The in-flight limits (0: none)."""
        cdef Py_ssize_t i
        return tuple(self._ep[i].limit for i in range(self._n))

    def set_external(self, values):
        """Other clients' requests in flight per endpoint (ints >= 0), see the class docstring. ValueError names a
        bad index."""
        external = [_index(x) for x in values]
        if len(external) != self._n:
            raise ValueError(f"external has length {len(external)}, expected {self._n}")
        for k, v in enumerate(external):
            if v < 0:
                raise ValueError(f"external[{k}] = {v!r}: must be >= 0")
        cdef Py_ssize_t i
        for i in range(self._n):
            self._ep[i].external = external[i]

    def external(self):
        """Other clients' requests in flight per endpoint, as last set (0: none)."""
        cdef Py_ssize_t i
        return tuple(self._ep[i].external for i in range(self._n))

    def set_available(self, Py_ssize_t i, bint available):
        """Health mask: an unavailable endpoint is never picked (its weight is kept)."""
        self._check_index(i)
        self._ep[i].available = available
        self._rebuild()

    def resize(self, n_endpoints):
        """Keep endpoints [0, min(old, new)) with all their state; new ones get weight 0, available, zero counters.
        Dropping an endpoint with requests in flight raises ValueError (drain it first: weight 0, then wait)."""
        cdef Py_ssize_t n = _index(n_endpoints), i
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        for i in range(n, self._n):
            if self._ep[i].in_flight:
                raise ValueError(f"endpoint {i} has {self._ep[i].in_flight} requests in flight; cannot drop it")
        self._set_size(n)
        self._rebuild()

    def remove(self, Py_ssize_t i):
        """Endpoint i left: never picked again; the records of its requests in flight still land (class
        docstring). Removing a removed slot changes nothing."""
        self._check_index(i)
        self._ep[i].removed = 1
        self._rebuild()

    def reuse(self, Py_ssize_t i):
        """Slot i, removed and with nothing in flight, for a new endpoint: weight 0, available, no limit, no
        external load, zero counters, NaN latency. ValueError when it is not removed or has requests in flight."""
        self._check_index(i)
        if not self._ep[i].removed:
            raise ValueError(f"endpoint {i} is not removed; only a removed slot can be reused")
        if self._ep[i].in_flight:
            raise ValueError(f"endpoint {i} has {self._ep[i].in_flight} requests in flight; cannot reuse it")
        self._fresh(i)
        self._rebuild()

    def is_removed(self, Py_ssize_t i):
        self._check_index(i)
        return bool(self._ep[i].removed)

    def removed(self):
        """Per slot: removed (``remove``) and not reused since."""
        cdef Py_ssize_t n = self._n, i
        cdef Endpoint* s = self._snapshot()
        try:
            return tuple([bool(s[i].removed) for i in range(n)])
        finally:
            free(s)

    # ---- hot path --------------------------------------------------------------------------------------------

    def pick(self, exclude=None):
        """Choose an endpoint (see the class docstring) and count it in flight. Raises NoEndpointAvailable."""
        if exclude is not None:
            return self._pick_excluding(exclude)
        return self._pick()

    cdef Py_ssize_t _pick(self) except -1:
        cdef Py_ssize_t a, b
        if self._total <= 0.0:
            raise NoEndpointAvailable("no available endpoint with weight > 0")
        a = self._draw()
        b = self._draw()
        return self._choose(a, b)

    cdef object _pick_excluding(self, exclude):
        """pick() with ``exclude``: mark the excluded endpoints, draw, unmark, all without a Python call."""
        items = (exclude,) if isinstance(exclude, int) else tuple(exclude)
        cdef Py_ssize_t m = len(items), k, j, a, b = -1
        cdef Py_ssize_t* idx = <Py_ssize_t*>malloc((m if m > 0 else 1) * sizeof(Py_ssize_t))
        if idx == NULL:
            raise MemoryError()
        try:
            for k in range(m):  # may run user __index__: before any shared state is touched
                v = _index(items[k])
                idx[k] = v if 0 <= v < self._n else -1
        except BaseException:
            free(idx)
            raise
        if self._total <= 0.0:
            free(idx)
            raise NoEndpointAvailable("no available endpoint with weight > 0")
        # from here to free(idx): no Python calls
        for k in range(m):
            j = idx[k]
            if 0 <= j < self._n:
                self._ep[j].excluded = 1
        a = self._draw_excluding()
        if a >= 0:
            b = self._draw_excluding()
            a = self._choose(a, b)  # with the marks still set: a full endpoint's replacement is not excluded
        for k in range(m):
            j = idx[k]
            if 0 <= j < self._n:
                self._ep[j].excluded = 0
        free(idx)
        if a < 0:
            raise NoEndpointAvailable("every available endpoint with weight > 0 is excluded")
        return a

    def take(self, Py_ssize_t i):
        """Count a pick of endpoint ``i`` that the caller chose itself, whatever its weight and health mask (a
        request's last resort, ``tritonmix.request.attempts``): in flight and picks += 1, matched by one ``record``
        as any pick is. NoEndpointAvailable when the endpoint was removed."""
        self._check_index(i)
        cdef Endpoint* e = &self._ep[i]
        if e.removed:
            raise NoEndpointAvailable(f"endpoint {i} was removed")
        e.in_flight += 1
        e.picks += 1
        return i

    def record(self, Py_ssize_t i, double latency_s, bint ok):
        """The one completion of a pick of ``i``: in_flight -= 1, counters and EWMAs updated (class docstring)."""
        self._record(i, latency_s, ok)

    cdef int _record(self, Py_ssize_t i, double latency_s, bint ok) except -1:
        self._check_index(i)
        if not (latency_s >= 0.0 and latency_s != INFINITY):
            raise ValueError(f"latency_s = {latency_s!r} for endpoint {i}: must be finite and >= 0")
        cdef Endpoint* e = &self._ep[i]
        if e.in_flight <= 0:
            raise UnmatchedRecord(f"record({i}) without a pick of endpoint {i} in flight")
        e.in_flight -= 1
        cdef double alpha = self._alpha
        if ok:
            if e.successes == 0:
                e.ewma_latency_s = latency_s
            else:
                e.ewma_latency_s = alpha * latency_s + (1.0 - alpha) * e.ewma_latency_s
            e.successes += 1
            e.error_rate = (1.0 - alpha) * e.error_rate
        else:
            e.failures += 1
            e.error_rate = alpha + (1.0 - alpha) * e.error_rate
        return 0

    # ---- reading -------------------------------------------------------------------------------------------

    def stats(self):
        """Per-endpoint counters, columnar (one tuple per field); O(n), from a consistent snapshot."""
        cdef Py_ssize_t n = self._n, i
        cdef Endpoint* s = self._snapshot()
        try:
            return DispatchStats(
                tuple([s[i].in_flight for i in range(n)]),
                tuple([s[i].picks for i in range(n)]),
                tuple([s[i].successes for i in range(n)]),
                tuple([s[i].failures for i in range(n)]),
                tuple([s[i].ewma_latency_s for i in range(n)]),
                tuple([s[i].error_rate for i in range(n)]),
            )
        finally:
            free(s)

    def weights(self):
        cdef Py_ssize_t n = self._n, i
        cdef Endpoint* s = self._snapshot()
        try:
            return tuple([s[i].weight for i in range(n)])
        finally:
            free(s)

    def is_available(self, Py_ssize_t i):
        self._check_index(i)
        return bool(self._ep[i].available)

    def in_flight(self, Py_ssize_t i):
        self._check_index(i)
        return self._ep[i].in_flight

    def __repr__(self):
        cdef Py_ssize_t i
        cdef int64_t total = 0
        for i in range(self._n):
            total += self._ep[i].in_flight
        return f"<Dispatcher (cython) n_endpoints={self._n} in_flight={total}>"

    # ---- internals -----------------------------------------------------------------------------------------

    cdef int _set_size(self, Py_ssize_t n) except -1:
        """Reallocate to n endpoints; new ones: weight 0, available, zero counters, NaN latency."""
        cdef Py_ssize_t cap = n if n > 0 else 1, i
        cdef Endpoint* ep = <Endpoint*>realloc(self._ep, cap * sizeof(Endpoint))
        if ep == NULL:
            raise MemoryError()
        self._ep = ep
        cdef double* cum = <double*>realloc(self._cum, cap * sizeof(double))
        if cum == NULL:
            raise MemoryError()
        self._cum = cum
        for i in range(self._n, n):
            self._fresh(i)
        self._n = n
        return 0

    cdef void _fresh(self, Py_ssize_t i) noexcept:
        """Slot i as new: weight 0, available, not removed, zero counters, NaN latency."""
        cdef Endpoint* e = &self._ep[i]
        e.weight = 0.0
        e.ewma_latency_s = NAN
        e.error_rate = 0.0
        e.in_flight = 0
        e.limit = 0
        e.external = 0
        e.picks = 0
        e.successes = 0
        e.failures = 0
        e.available = 1
        e.removed = 0
        e.excluded = 0

    cdef void _rebuild(self) noexcept:
        """Cumulative effective weights, summed left to right (the twin sums in the same order)."""
        cdef double acc = 0.0
        cdef Py_ssize_t i, last = -1
        for i in range(self._n):
            if _eligible(&self._ep[i]):
                acc += self._ep[i].weight
                last = i
            self._cum[i] = acc
        self._total = acc
        self._last = last

    cdef Py_ssize_t _draw(self) noexcept:
        """First index whose cumulative weight exceeds u * total (bisection, O(log n)); rounding past the end
        takes the last eligible endpoint. Requires _total > 0."""
        cdef double u = tm_splitmix64_double(&self._state) * self._total
        cdef Py_ssize_t i = tm_upper_bound(self._cum, self._n, u)
        return i if i < self._n else self._last

    cdef Py_ssize_t _draw_excluding(self) noexcept:
        """A draw by weight that is not marked excluded, or -1 when every eligible endpoint is excluded."""
        cdef int t
        cdef Py_ssize_t i
        for t in range(EXCLUDE_RETRIES):
            i = self._draw()
            if not self._ep[i].excluded:
                return i
        return self._draw_scan(0)

    cdef Py_ssize_t _draw_open(self) noexcept:
        """A draw by weight over the eligible, not excluded endpoints with a limit and under it; -1 if none."""
        return self._draw_scan(1)

    cdef Py_ssize_t _draw_scan(self, bint under_limit) noexcept:
        """One draw by weight over the eligible, not excluded endpoints (and, with ``under_limit``, only those with
        a limit and under it) by a linear scan, summed left to right; -1 without drawing when their weight is 0."""
        cdef Py_ssize_t i, last = -1
        cdef double rest = 0.0, acc = 0.0, u
        for i in range(self._n):
            if self._member(&self._ep[i], under_limit):
                rest += self._ep[i].weight
        if rest <= 0.0:
            return -1
        u = tm_splitmix64_double(&self._state) * rest
        for i in range(self._n):
            if self._member(&self._ep[i], under_limit):
                acc += self._ep[i].weight
                last = i
                if acc > u:
                    return i
        return last

    cdef inline bint _member(self, const Endpoint* e, bint under_limit) noexcept:
        return (not e.excluded and _eligible(e)
                and (not under_limit or (0 < e.limit and e.in_flight + e.external < e.limit)))

    cdef Py_ssize_t _choose(self, Py_ssize_t a, Py_ssize_t b) noexcept:
        """Keep b only when it carries less load per unit of weight; a full choice overflows (class docstring);
        count the pick."""
        cdef Endpoint* ea = &self._ep[a]
        cdef Endpoint* eb = &self._ep[b]
        cdef Py_ssize_t o
        if <double>(eb.in_flight + eb.external) * ea.weight < <double>(ea.in_flight + ea.external) * eb.weight:
            ea, eb = eb, ea
            a, b = b, a
        if ea.limit and ea.in_flight + ea.external >= ea.limit:
            if eb.limit == 0 or eb.in_flight + eb.external < eb.limit:
                ea = eb
                a = b
            else:
                o = self._draw_open()
                if o >= 0:
                    a = o
                    ea = &self._ep[o]
        ea.in_flight += 1
        ea.picks += 1
        return a

    cdef Py_ssize_t _check_index(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self._n:
            raise IndexError(f"endpoint index {i} out of range for {self._n} endpoints")
        return i

    cdef Endpoint* _snapshot(self) except NULL:
        cdef Endpoint* s = <Endpoint*>malloc((self._n if self._n > 0 else 1) * sizeof(Endpoint))
        if s == NULL:
            raise MemoryError()
        memcpy(s, self._ep, self._n * sizeof(Endpoint))
        return s


# ---- the per-request bookkeeping around the dispatcher (the twin is ``_lane_py.py``) -------------------------------

cdef class SlidingCount:
    """Events over a sliding window of ``window_s``, kept as two half-windows rotated on use: the count is the
    previous half plus the current one (so it covers between window_s / 2 and window_s). The half a time falls
    in is floor(now / (window_s / 2)); moving to the next half keeps the current half as the previous one, any
    other move clears both. O(1) per add and per read; atomic under the GIL (no Python call inside)."""

    def __init__(self, double window_s, double now):
        if not (window_s > 0.0 and window_s != INFINITY):
            raise ValueError(f"window_s must be finite and > 0, got {window_s!r}")
        self._half_s = window_s / 2.0
        self._epoch = <int64_t>floor(now / self._half_s)
        self._previous = 0
        self._current = 0

    cdef void _rotate(self, double now) noexcept:
        cdef int64_t epoch = <int64_t>floor(now / self._half_s)
        if epoch != self._epoch:
            self._previous = self._current if epoch == self._epoch + 1 else 0
            self._current = 0
            self._epoch = epoch

    cdef void _add(self, double now) noexcept:
        self._rotate(now)
        self._current += 1

    def add(self, double now):
        """Count one event at ``now``."""
        self._add(now)

    def total(self, double now):
        """Events in the window that ends at ``now``."""
        self._rotate(now)
        return self._previous + self._current


cdef class EndpointTally:
    """What every request of a client touches per endpoint, shared by all its lanes: successes, the current run of
    consecutive failures (the streak, written by the router under its lock), and ``readmit_at``, the earliest time
    an ejected endpoint is due back (infinity: none)."""

    def __cinit__(self, *args, **kwargs):
        self._n = 0
        self._ok = NULL
        self._streak = NULL
        self.readmit_at = INFINITY

    def __dealloc__(self):
        free(self._ok)
        free(self._streak)

    def __init__(self, n_endpoints):
        cdef Py_ssize_t n = _index(n_endpoints), i
        if n < 0:
            raise ValueError(f"n_endpoints must be >= 0, got {n}")
        self._ok = <int64_t*>malloc((n if n > 0 else 1) * sizeof(int64_t))
        self._streak = <int64_t*>malloc((n if n > 0 else 1) * sizeof(int64_t))
        if self._ok == NULL or self._streak == NULL:
            raise MemoryError()
        for i in range(n):
            self._ok[i] = 0
            self._streak[i] = 0
        self._n = n

    @property
    def n_endpoints(self):
        return self._n

    def successes(self):
        """Successful attempts per endpoint so far."""
        cdef Py_ssize_t i
        return tuple([self._ok[i] for i in range(self._n)])

    def streak(self, Py_ssize_t i):
        """Consecutive failed attempts of endpoint i since its last success."""
        return self._streak[self._check(i)]

    def set_streak(self, Py_ssize_t i, int64_t value):
        self._streak[self._check(i)] = value

    def resize(self, n_endpoints):
        """Grow to n endpoints (new ones: zero counts). Never shrinks: a lane records on any slot its dispatcher
        has, without a bounds check, so the tally grows before the dispatchers and stays as long; ValueError
        for a smaller n."""
        cdef Py_ssize_t n = _index(n_endpoints), i
        if n < self._n:
            raise ValueError(f"an EndpointTally only grows: {n} < {self._n} endpoints")
        cdef int64_t* ok = <int64_t*>realloc(self._ok, (n if n > 0 else 1) * sizeof(int64_t))
        if ok == NULL:
            raise MemoryError()
        self._ok = ok
        cdef int64_t* streak = <int64_t*>realloc(self._streak, (n if n > 0 else 1) * sizeof(int64_t))
        if streak == NULL:
            raise MemoryError()
        self._streak = streak
        for i in range(self._n, n):
            self._ok[i] = 0
            self._streak[i] = 0
        self._n = n

    def reset(self, Py_ssize_t i):
        """Slot i taken by a new endpoint: zero successes, no streak."""
        self._check(i)
        self._ok[i] = 0
        self._streak[i] = 0

    cdef Py_ssize_t _check(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self._n:
            raise IndexError(f"endpoint index {i} out of range for {self._n} endpoints")
        return i


cdef class Lane:
    """The bookkeeping of one (model, request class) of a client, around its dispatcher: every attempt is
    ``t0 = begin()`` (user requests only), ``i = pick()``, then exactly one of ``succeeded(i, t0)`` or
    ``failed(i, t0, outcome)``.

        begin()          one clock read; arrivals += 1; the retry budget's request count += 1; when
                         ``tally.readmit_at`` has passed, ``on_due(now)`` (the router readmits)
        pick(exclude)    the dispatcher's pick
        succeeded(i, t0) record(i, now - t0, ok); successes[i] += 1; ``on_slow(i, latency_s)`` only when the
                         endpoint has a failure streak to end or the latency is over ``slo_s`` (infinity for batch)
        failed(i, t0, outcome)  record(i, max(0, now - t0), failed); ``on_failed(i, outcome, now)`` unless
                         ``outcome`` is None (a cancellation: recorded, not held against the endpoint)

    O(1) plus the pick's O(log n); the callbacks run only on the rare branches. Atomic under the GIL between the
    clock read and a callback (no Python call in between)."""

    def __init__(self, Dispatcher dispatcher not None, EndpointTally tally not None, SlidingCount requests not None,
                 clock, double slo_s, on_due, on_slow, on_failed):
        if tally._n != dispatcher._n:
            raise ValueError(f"tally has {tally._n} endpoints, the dispatcher {dispatcher._n}")
        self.dispatcher = dispatcher
        self.tally = tally
        self.requests = requests
        self.slo_s = slo_s
        self._clock = clock
        self._on_due = on_due
        self._on_slow = on_slow
        self._on_failed = on_failed
        self._arrivals = 0

    @property
    def arrivals(self):
        """User requests begun on this lane (retries and hedges not counted)."""
        return self._arrivals

    def begin(self):
        cdef double now = self._clock()
        self._arrivals += 1
        self.requests._add(now)
        if now >= self.tally.readmit_at:
            self._on_due(now)
        return now

    def pick(self, exclude=None):
        if exclude is None:
            return self.dispatcher._pick()
        return self.dispatcher._pick_excluding(exclude)

    def succeeded(self, Py_ssize_t i, double t0):
        cdef double latency_s = self._clock() - t0
        self.dispatcher._record(i, latency_s, True)
        self.tally._ok[i] += 1
        if self.tally._streak[i] or latency_s > self.slo_s:
            self._on_slow(i, latency_s)
        return latency_s

    def failed(self, Py_ssize_t i, double t0, outcome=None):
        cdef double now = self._clock()
        cdef double latency_s = now - t0
        self.dispatcher._record(i, latency_s if latency_s > 0.0 else 0.0, False)
        if outcome is not None:
            self._on_failed(i, outcome, now)
        return now
