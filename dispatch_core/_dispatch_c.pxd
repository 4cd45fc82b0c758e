# Declarations of the compiled dispatch core; the code is in _dispatch_c.pyx, the rule in its class docstring.
from libc.stdint cimport int64_t, uint64_t


cdef struct Endpoint:
    double weight            # desired share from the controller (>= 0, finite)
    double ewma_latency_s    # NaN until the first successful record
    double error_rate        # EWMA of (0 if ok else 1)
    int64_t in_flight        # picks not yet recorded; never negative
    int64_t limit            # in-flight limit for the pick rule (0: none)
    int64_t external         # requests of other clients in flight there (set_external; 0 unless told)
    uint64_t picks
    uint64_t successes
    uint64_t failures
    unsigned char available  # health mask
    unsigned char removed    # left the set (remove): never picked; records of its requests still out land
    unsigned char excluded   # scratch for pick(exclude=...): set and cleared within one call, GIL held


cdef class Dispatcher:
    cdef Py_ssize_t _n
    cdef Endpoint* _ep       # _n endpoints
    cdef double* _cum        # _cum[i] = sum of effective weights of endpoints 0..i (left to right)
    cdef double _total       # _cum[_n - 1], or 0.0
    cdef Py_ssize_t _last    # last endpoint with effective weight > 0, or -1
    cdef double _alpha
    cdef uint64_t _state     # splitmix64 state

    cdef int _set_size(self, Py_ssize_t n) except -1
    cdef void _fresh(self, Py_ssize_t i) noexcept
    cdef void _rebuild(self) noexcept
    cdef Py_ssize_t _draw(self) noexcept
    cdef Py_ssize_t _draw_excluding(self) noexcept
    cdef Py_ssize_t _draw_open(self) noexcept
    cdef Py_ssize_t _draw_scan(self, bint under_limit) noexcept
    cdef bint _member(self, const Endpoint* e, bint under_limit) noexcept
    cdef Py_ssize_t _pick(self) except -1
    cdef int _record(self, Py_ssize_t i, double latency_s, bint ok) except -1
    cdef object _pick_excluding(self, exclude)
    cdef Py_ssize_t _choose(self, Py_ssize_t a, Py_ssize_t b) noexcept
    cdef Py_ssize_t _check_index(self, Py_ssize_t i) except -1
    cdef Endpoint* _snapshot(self) except NULL


cdef class SlidingCount:
    cdef double _half_s
    cdef int64_t _epoch
    cdef int64_t _previous
    cdef int64_t _current

    cdef void _rotate(self, double now) noexcept
    cdef void _add(self, double now) noexcept


cdef class EndpointTally:
    cdef Py_ssize_t _n
    cdef int64_t* _ok        # successes per endpoint
    cdef int64_t* _streak    # consecutive failures per endpoint
    cdef public double readmit_at

    cdef Py_ssize_t _check(self, Py_ssize_t i) except -1


cdef class Lane:
    cdef readonly Dispatcher dispatcher
    cdef readonly EndpointTally tally
    cdef readonly SlidingCount requests
    cdef readonly double slo_s
    cdef object _clock
    cdef object _on_due
    cdef object _on_slow
    cdef object _on_failed
    cdef int64_t _arrivals
