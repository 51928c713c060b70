"""Numbers to text in bulk: float64 arrays as exact decimal text, vectorized with numpy.

Writing a long trace as CSV or JSON formats one number per value, and Python's
``repr`` costs about half a microsecond each: 150 groups x 1e6 updates would
spend over a minute in ``repr`` alone. Here blocks of 8192 values go through a
fixed sequence of numpy operations on whole columns.

**Exactness.** Every float is written with at most 17 significant digits that
read back as the same float64 (``float(text) == x``, bit for bit). The digits
come from ``x * 10**(16-k)`` evaluated in double-double arithmetic (Dekker's
exact product against a double-double table of powers of ten made from exact
rationals), so the 17-digit integer ``N`` is the nearest one to the exact
product up to about ``1e-15`` of a unit. ``N * 10**(k-16)`` is then within
``0.5 + 1e-15`` units of the 17th digit, i.e. within ``5.0e-17 * x``, while the
other float64 values are at least ``2**-53 * x`` away (half of that is
``5.55e-17 * x``): the text rounds back to ``x``. The nearest 15- or 16-digit
decimal is used instead when it is provably closer to ``x`` than half the
smaller float64 gap around it, so ``0.1`` reads as in Python, not as
``0.10000000000000001``; the text is then Python's ``repr`` (up to ties). Trailing
zeros are dropped and the layout is ``repr``'s: positional for ``1e-4 <= |x| <
1e16``, else ``d.ddde-05``. Zeros, NaN and infinities have fixed spellings (per
output format); magnitudes outside ``1e-280 .. 1e280`` (subnormals, huge
values) go through Python's ``repr`` one by one.

**Holes.** :func:`float_chars` returns one row of :data:`FLOAT_WIDTH` bytes per
number whose ``0`` bytes are holes: a writer puts such rows side by side with
other fields (a numpy structured array, see :func:`records`) and the text is
its bytes without the zero bytes (:func:`compact`). No per-row length is ever
computed, and no Python object is made per number.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["FLOAT_WIDTH", "BLOCK_VALUES", "float_chars", "int_chars", "as_field", "records", "compact",
           "CSV_SPECIALS", "JSON_SPECIALS"]

#: Bytes per :func:`float_chars` row (eight 4-byte words; at most 24 characters are used).
FLOAT_WIDTH = 32
#: Values a writer formats at once (a text block of a few MB).
BLOCK_VALUES = 1 << 16
#: Spellings of NaN, +inf and -inf in CSV (Python's ``repr``) and in JSON (the json module's).
CSV_SPECIALS = ("nan", "inf", "-inf")
JSON_SPECIALS = ("NaN", "Infinity", "-Infinity")

_FAST_LO, _FAST_HI = 1e-280, 1e280  # magnitudes the double-double path takes without overflow or subnormals
_POW_LO, _POW_HI = -270, 300        # exponents of the powers-of-ten table (their lo parts stay normal)
_K_LO, _K_HI = -290, 290            # decimal exponents of the layout tables
_SPLIT = 134217729.0                # 2**27 + 1 (Dekker's split)
_BLOCK = 1 << 13                    # values formatted at once: 64 KiB arrays stay below malloc's mmap threshold


def _words(text: bytes | Sequence[bytes], width: int) -> np.ndarray:
    """Byte strings as rows of ``width`` native uint32 words (zero-padded), memory order = text order."""
    items = [text] if isinstance(text, bytes) else list(text)
    buf = np.zeros((len(items), 4 * width), dtype=np.uint8)
    for i, b in enumerate(items):
        buf[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    return buf.view(np.uint32)


# --------------------------------------------------------------------------- digits

@lru_cache(maxsize=1)
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """``10**e`` as double-double ``(hi, lo)`` for ``e`` in ``_POW_LO .. _POW_HI``, from exact rationals."""
    his, los = [], []
    for e in range(_POW_LO, _POW_HI + 1):
        exact = Fraction(10) ** e
        hi = float(exact)  # correctly rounded
        his.append(hi)
        los.append(float(exact - Fraction(hi)))
    return np.array(his), np.array(los)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def _scaled(a: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a * 10**s`` as an unevaluated sum ``hi + lo`` (relative error about 1e-31)."""
    ph_all, pl_all = _powers()
    ph, pl = ph_all[s - _POW_LO], pl_all[s - _POW_LO]
    p = a * ph
    ah, al = _split(a)
    bh, bl = _split(ph)
    err = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # a * ph == p + err exactly (Dekker)
    t = err + a * pl
    hi = p + t
    return hi, t - (hi - p)


def _nearest(a: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a * 10**(16-k) = n + f``: ``n`` the nearest integer (int64), ``|f| <= 0.5`` (error ~1e-16)."""
    hi, lo = _scaled(a, 16 - k)
    r = np.rint(hi)
    frac = (hi - r) + lo  # hi - r is exact (Sterbenz)
    step = np.rint(frac)
    return r.astype(np.int64) + step.astype(np.int64), frac - step


def _digits(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For positive normal ``a``: ``N`` in ``[1e16, 1e17)`` and ``k``; ``N * 10**(k-16)`` reads back as ``a``."""
    k = np.floor(np.log10(a)).astype(np.int64)
    n, f = _nearest(a, k)
    for _ in range(4):  # log10 can be one off next to powers of ten; rounding can carry into 1e17
        up, down = n >= 10**17, n < 10**16
        bad = up | down
        if not bad.any():
            break
        k[bad] += up[bad].astype(np.int64) - down[bad].astype(np.int64)
        n[bad], f[bad] = _nearest(a[bad], k[bad])
    else:  # pragma: no cover - impossible for positive normal floats
        raise AssertionError("decimal exponent did not settle")
    # Shorter forms where they provably read back as a: the nearest 15-, else 16-digit decimal, when it is
    # closer to a than half the smaller gap around a. In units of the 17th digit, where a = n + f, the
    # distance is integer arithmetic on n's last digits plus f (error ~1e-16 of a unit); the bound is 1 to
    # 11 units, and its 1e-9 margin covers the rounding of gap * 10**(16-k).
    ph_all, _ = _powers()
    tol = (0.5 * (1.0 - 1e-9)) * (a - np.nextafter(a, 0.0)) * ph_all[16 - k - _POW_LO]
    todo = np.ones(a.size, dtype=bool)
    for unit in (100, 10):
        q, d = np.divmod(n, unit)
        t = d + f  # a - q * unit, in units of the 17th digit
        up = t >= unit / 2
        ok = todo & (np.where(up, unit - t, t) < tol)
        c = (q + up) * unit
        carry = c >= 10**17  # rounded up to 10**17: one more decimal exponent
        n = np.where(ok, np.where(carry, c // 10, c), n)
        k += ok & carry
        todo &= ~ok
    return n, k


# --------------------------------------------------------------------------- layout

@lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """Lookup tables of native uint32 words (each holds 4 characters in text order; 0 bytes are holes)."""
    quads = [f"{i:04d}".encode("ascii") for i in range(10000)]
    ks = range(_K_LO, _K_HI + 1)
    return {
        # 0..9999 as 4 digits; the first chunk (0..9) as a lone digit in the last byte, behind holes
        "quad": _words(quads, 1)[:, 0],
        "lead": _words([b"\0\0\0" + bytes([48 + i]) for i in range(10)], 1)[:, 0],
        "lead_dot": _words([b"\0\0" + bytes([48 + i]) + b"." for i in range(10)], 1)[:, 0],
        "trailing_zeros": np.array([4] + [4 - len(q.rstrip(b"0")) for q in quads[1:]], dtype=np.int64),
        # d1..d16 kept where the digit is significant: per length L, words of 0xFF / 0x00 bytes (columns: words)
        "keep": np.ascontiguousarray(_words([b"\xff" * (L - 1) for L in range(18)], 4).T),
        # "0.000" prefixes of 1e-4 <= x < 1 (k = -4 .. -1), in the first two words (d0 goes in byte 7)
        "small": np.ascontiguousarray(_words([b"\0" + b"0." + b"0" * (-k - 1) for k in (-1, -2, -3, -4)], 2).T),
        # exponent words "e-05" / "e+123" per k
        "expo": np.ascontiguousarray(
            _words([b"e" + (b"-" if k < 0 else b"+") + f"{abs(k):02d}".encode("ascii") for k in ks], 2).T),
        "minus": _words(b"-", 1)[:, 0],
    }


def _layout(n: np.ndarray, k: np.ndarray, neg: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
    """``repr``'s text of ``N * 10**(k-16)`` with the sign: ``(len(n), FLOAT_WIDTH // 4)`` uint32 words.

    Words: 0 sign (and "0." of small numbers), 1 the leading digit (and "." or the
    zeros), 2-5 digits d1..d16 (holes past the last significant one), 6-7 the
    exponent. ``ddd.ddd`` (``1 <= |x| < 1e16``, rare for hyperparameters) is built
    byte by byte. ``words`` (zeros, that shape) receives the result when given.
    """
    t = _tables()
    if words is None:
        words = np.zeros((n.size, FLOAT_WIDTH // 4), dtype=np.uint32)
    q, lz = n, np.zeros(n.size, dtype=np.int64)
    pending = np.ones(n.size, dtype=bool)  # only zero chunks so far, from the right
    for j in range(5, 1, -1):  # d1..d16 in four chunks of four
        q, r = np.divmod(q, 10000)
        words[:, j] = t["quad"][r]
        lz += np.where(pending, t["trailing_zeros"][r], 0)
        pending &= r == 0
    d0 = q  # 1..9
    length = 17 - lz
    for j in range(4):  # one column at a time: numpy is slow on rows of four
        words[:, 2 + j] &= t["keep"][j][length]
    small = (k >= -4) & (k < 0)
    big = (k >= 0) & (k < 16)
    expo = ~(small | big)
    words[:, 0] = np.where(neg, t["minus"], 0)
    if expo.all():
        words[:, 1] = np.where(length > 1, t["lead_dot"][d0], t["lead"][d0])
        words[:, 6] = t["expo"][0][k - _K_LO]
        words[:, 7] = t["expo"][1][k - _K_LO]
    elif small.all():
        words[:, 0] |= t["small"][0][-k - 1]
        words[:, 1] = t["small"][1][-k - 1] | t["lead"][d0]
    else:
        ke = np.where(expo, k, 0) - _K_LO
        ks = np.where(small, -k - 1, 0)
        words[:, 0] |= np.where(small, t["small"][0][ks], 0)
        words[:, 1] = np.where(small, t["small"][1][ks], np.where(length > 1, t["lead_dot"][d0], 0)) | np.where(
            small | (length == 1), t["lead"][d0], 0)
        words[:, 6] = np.where(expo, t["expo"][0][ke], 0)
        words[:, 7] = np.where(expo, t["expo"][1][ke], 0)
        i = np.flatnonzero(big)
        if i.size:
            words[i] = _positional(words[i], d0[i], k[i], length[i])
    return words


def _positional(words: np.ndarray, d0: np.ndarray, k: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``[-]ddd.ddd`` for ``0 <= k < 16``: d0..dk, ".", the fraction digits or "0"; rebuilt byte by byte."""
    raw = np.ascontiguousarray(words).view(np.uint8)  # byte 0 sign, bytes 8..23 d1..d16 (holes past the last)
    digits = np.concatenate([(d0 + 48).astype(np.uint8)[:, None], raw[:, 8:24]], axis=1)
    digits = np.where(digits == 0, ord("0"), digits)  # integer places past the significant digits are zeros
    j = np.arange(17)[None, :]
    kk, L = k[:, None], length[:, None]
    wide = np.zeros((k.size, 3 * 17), dtype=np.uint8)  # per digit j: d_j, "." after d_k, "0" when no fraction
    wide[:, 0::3] = np.where(j < np.maximum(L, kk + 1), digits, 0)
    wide[:, 1::3] = np.where(j == kk, ord("."), 0)
    wide[:, 2::3] = np.where((j == kk) & (L <= kk + 1), ord("0"), 0)
    out = np.zeros((k.size, FLOAT_WIDTH), dtype=np.uint8)
    out[:, 0] = raw[:, 0]
    keep = wide != 0
    r, c = np.nonzero(keep)
    out[r, np.cumsum(keep, axis=1)[r, c]] = wide[r, c]  # at most 19 characters after the sign
    return out.view(np.uint32)


# --------------------------------------------------------------------------- public

def float_chars(values: np.ndarray, specials: tuple[str, str, str] = CSV_SPECIALS) -> np.ndarray:
    """Exact decimal text of float64 values, one row of :data:`FLOAT_WIDTH` bytes each (0 bytes are holes).

    Args:
        values: Any array of floats (flattened in C order).
        specials: Spellings of NaN, +inf and -inf.

    Returns:
        A ``(values.size, FLOAT_WIDTH)`` uint8 matrix; :func:`compact` of a row is its text.
    """
    x = np.ascontiguousarray(values, dtype=np.float64).ravel()
    out = np.zeros((x.size, FLOAT_WIDTH // 4), dtype=np.uint32)
    a = np.abs(x)
    with np.errstate(invalid="ignore"):
        fast = (a >= _FAST_LO) & (a <= _FAST_HI)
    if fast.all():
        for lo in range(0, x.size, _BLOCK):
            s = slice(lo, lo + _BLOCK)
            _layout(*_digits(a[s]), np.signbit(x[s]), out[s])
    else:
        idx = np.flatnonzero(fast)
        for lo in range(0, idx.size, _BLOCK):
            i = idx[lo:lo + _BLOCK]
            out[i] = _layout(*_digits(a[i]), np.signbit(x[i]))
        _fill_rest(out.view(np.uint8), x, np.flatnonzero(~fast), specials)
    return out.view(np.uint8)


def _fill_rest(out: np.ndarray, x: np.ndarray, rest: np.ndarray, specials: tuple[str, str, str]) -> None:
    """Zeros and specials (vectorized), out-of-range magnitudes (Python's repr, one by one)."""
    v = x[rest]
    groups = [(v == 0) & ~np.signbit(v), (v == 0) & np.signbit(v), np.isnan(v), v == np.inf, v == -np.inf]
    done = np.zeros(rest.size, dtype=bool)
    for mask, text in zip(groups, ("0.0", "-0.0", *specials)):
        if mask.any():
            b = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
            out[rest[mask], : b.size] = b
            done |= mask
    for i in rest[~done]:
        b = np.frombuffer(repr(float(x[i])).encode("ascii"), dtype=np.uint8)
        out[i, : b.size] = b


def int_chars(values: np.ndarray) -> np.ndarray:
    """Decimal text of non-negative integers (< 2**53), one row each, holes instead of leading zeros."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel()
    width = max(1, len(str(int(v.max())))) if v.size else 1
    out = np.zeros((v.size, width), dtype=np.uint8)
    q = v.astype(np.float64)  # exact below 2**53, and floor(q / 10) is exact
    for j in range(width - 1, -1, -1):
        q10 = np.floor(q / 10.0)
        digit = (q - 10.0 * q10).astype(np.uint8) + np.uint8(48)
        out[:, j] = np.where((q > 0) | (j == width - 1), digit, 0)
        q = q10
    return out


def as_field(chars: np.ndarray) -> np.ndarray:
    """A hole-padded ``(rows, width)`` byte matrix as one ``S<width>`` value per row (a :func:`records` column)."""
    return np.ascontiguousarray(chars, dtype=np.uint8).view(f"S{chars.shape[1]}")[:, 0]


def records(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Fields side by side: each column is ``(rows, width)`` uint8 or an ``S<width>`` array of rows.

    Returns a contiguous structured array whose bytes are the rows in order;
    :func:`compact` turns it into text. Columns of one row (a separator) are
    broadcast to every row.
    """
    cols = [c if c.dtype.kind == "S" else as_field(c) for c in columns]
    rows = max(c.shape[0] for c in cols)
    rec = np.empty(rows, dtype=[(f"f{i}", c.dtype) for i, c in enumerate(cols)])
    for i, c in enumerate(cols):
        rec[f"f{i}"] = c
    return rec


def compact(block: np.ndarray) -> bytes:
    """The text of a hole-padded block (uint8 rows or :func:`records`): its bytes in order, zero bytes left out."""
    return np.ascontiguousarray(block).tobytes().translate(None, b"\x00")
