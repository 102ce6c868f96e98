"""TE compute and PrimFunc builder of the shuffle-friendly dense lookup (K = 16, or 32 / 64 with
AVX-512 VBMI; INT8 tables).

Layout (different from ``lut_compute.lookup_dense``, chosen so that a byte shuffle does the
lookup):

* codes ``[C, M]`` uint8, codebook-major: the codes of consecutive rows for one codebook are
  contiguous, so 64 of them load as one shuffle index vector;
* tables ``[N, C, K]`` int8: one K-byte column per (output channel, codebook), one register
  (K = 16: ``vpshufb`` / ``tbl``; K = 32 / 64: ``vpermb``, ``schedules.intrin.lut_vbmi``);
* output ``Y[M, N]`` float32 ``= acc * scale[n] + bias[n]`` (optional ReLU), with
  ``acc[m, n] = sum_c T[n, c, code[c, m]]``.

Accumulators: word sums. A byte shuffle returns 64 looked-up bytes; read as 32 16-bit words,
word ``w`` of a 64-row block holds the entries of two rows (``pair_rows``: rows
``16 (w // 8) + w % 8`` and 8 rows later, the index vector permuted in-lane so). With the
entries biased to ``u = T + 128`` in ``[0, 255]`` the kernel keeps, per word and channel, two
uint16 sums over the codebooks of a chunk (``C_chunk <= 256``):

* ``S = sum (u_low + 256 u_high) mod 2^16`` (the words as they come: one add), and
* ``H = sum u_high <= 255 C_chunk`` (the words shifted right by 8: one shift, one add);

so the low row's sum is ``(S - 256 H) mod 2^16 <= 255 C_chunk`` and both rows' ``acc`` are
those sums minus ``128 C_chunk``, exactly, for chunks of up to ``INT16_SAFE_CODEBOOKS = 256``
codebooks (255 * 257 < 2^16) and any table in ``[-128, 127]``; a larger C is split into chunks.
The bound does not depend on K: each row still adds one biased byte per codebook, whichever of
the K entries it is, so K = 32 / 64 keep the same chunks and the same exact int16 / int32 sums.
That is 3 vector operations besides the shuffle per 64 lookups (plus the bias XOR per column
and the code permutation per block, shared), against 4 for sign-extending the bytes to int16
(two ``vpmovsxbw`` and a lane extract, all on port 5, the shuffle's own port, and two adds).

The word sums of a chunk are one tensor ``[N, M_pad / 64, 2, 32]`` (``[..., 0, w]`` = S,
``[..., 1, w]`` = H), written in one-hot form, ``acc[n, b, s, w] += word_term(...)`` over
``k < K``, which ``tensorize`` matches against the shuffle intrinsics of
``schedules.intrin.lut_shuffle`` (one call = one 64-row block). A decode stage
(``DECODE_BLOCK``) turns them into the accumulator ``[N, M_pad]`` in row order (int16 for
one chunk, else int32 with the chunks added); ``scaled_output`` reads that. Rows are padded to
a multiple of ``ROW_ALIGN`` (64) with code 0; padded rows are computed and never stored.
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind
from .lut_compute import to_prim_func

LOOKUP_DENSE_SHUFFLE = LutKind.LOOKUP_DENSE_SHUFFLE

NUM_CENTROIDS = 16
# The K the shuffle lookup is built for: 16 (a 16-byte shuffle), 32 and 64 (a 64-byte ``vpermb``
# table, AVX-512 VBMI). Which of them a target runs is ``intrin.lut_shuffle.shuffle_centroids``.
SHUFFLE_CENTROIDS = (16, 32, 64)
CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC16_DTYPE = "uint16"
ROW_ALIGN = 64
INT16_SAFE_CODEBOOKS = 256
WORDS = ROW_ALIGN // 2  # 16-bit words per 64-row block
PAIR_SPAN = 8  # word w pairs rows 16 (w // 8) + w % 8 and PAIR_SPAN rows later
TABLE_BIAS = 128
DECODED_DTYPE = "int16"  # the decoded accumulator of a single chunk

CODES_PAD_BLOCK = "lut_codes_pad"
ACC_BLOCK_PREFIX = "lut_acc16_"
DECODE_BLOCK = "lut_acc32"
OUT_BLOCK = "lookup_out"


def padded_rows(rows: int, align: int = ROW_ALIGN) -> int:
    """``rows`` rounded up to a multiple of ``align``."""
    return -(-rows // align) * align


def codebook_chunks(num_codebooks: int, chunk: int = INT16_SAFE_CODEBOOKS) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` chunks of at most ``chunk`` codebooks, as even as possible."""
    count = -(-num_codebooks // chunk)
    bounds = [round(i * num_codebooks / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def pair_rows(word):
    """The two rows (within a 64-row block) whose entries word ``word`` holds: low, high byte."""
    low = (word // PAIR_SPAN) * (2 * PAIR_SPAN) + word % PAIR_SPAN
    return low, low + PAIR_SPAN


def word_term(sum_index, code_low, code_high, entry, k):
    """What centroid ``k`` adds to word sum ``sum_index`` (0: S, 1: H) of a row pair with codes
    ``code_low``/``code_high`` (int32) and table entry ``entry = T[k]`` (int8). Shared by the
    compute and the intrinsic's description, so that ``tensorize`` matches them."""
    biased = (entry.astype("int16") + tirx.const(TABLE_BIAS, "int16")).astype(ACC16_DTYPE)
    zero = tirx.const(0, ACC16_DTYPE)
    high = tirx.Select(code_high == k, biased, zero)
    both = tirx.Select(code_low == k, biased, zero) + tirx.Select(
        code_high == k, biased * tirx.const(256, ACC16_DTYPE), zero
    )
    return tirx.Select(sum_index == 0, both, high)


def _word_sums(codes: te.Tensor, table: te.Tensor, start: int, stop: int):
    """``acc[n, b, s, w] = sum_{c in [start, stop), k < K} word_term(...)`` of block ``b``."""
    c = te.reduce_axis((0, stop - start), name="c")
    k = te.reduce_axis((0, int(table.shape[2])), name="k")

    def word_sum(n, block, sum_index, word):
        low, high = pair_rows(word)
        row = block * ROW_ALIGN
        return te.sum(
            word_term(sum_index, codes[start + c, row + low].astype("int32"),
                      codes[start + c, row + high].astype("int32"), table[n, start + c, k], k),
            axis=[c, k],
        )

    return word_sum


def shuffle_accumulators(
    codes_t: te.Tensor,
    table: te.Tensor,
    row_align: int = ROW_ALIGN,
    chunk: int = INT16_SAFE_CODEBOOKS,
) -> list[te.Tensor]:
    """``[acc]``: the accumulator ``[N, M_pad]`` of codes ``[C, M]`` uint8 and a table
    ``[N, C, K]`` int8 (K in ``SHUFFLE_CENTROIDS``) (rows padded to a multiple of 64 with code 0), decoded from the uint16
    word sums of each codebook chunk (see the module docstring): int16 when there is one chunk
    (``|acc| <= 128 * 256``), else int32. ``scaled_output`` reads it."""
    num_codebooks, rows = (int(d) for d in codes_t.shape)
    out_features, table_codebooks, num_centroids = (int(d) for d in table.shape)
    if table_codebooks != num_codebooks or num_centroids not in SHUFFLE_CENTROIDS:
        raise ValueError(
            f"table {tuple(table.shape)} does not match codes {tuple(codes_t.shape)} with K in "
            f"{SHUFFLE_CENTROIDS}"
        )
    if row_align % ROW_ALIGN or not 0 < chunk <= INT16_SAFE_CODEBOOKS:
        raise ValueError(f"row_align must be a multiple of {ROW_ALIGN} and chunk in "
                         f"[1, {INT16_SAFE_CODEBOOKS}], not {row_align} and {chunk}")
    rows_pad = padded_rows(rows, row_align)
    if rows_pad != rows:
        codes = te.compute(
            (num_codebooks, rows_pad),
            lambda c, m: tirx.if_then_else(
                m < rows, codes_t[c, tirx.min(m, rows - 1)], tirx.const(0, CODE_DTYPE)
            ),
            name=CODES_PAD_BLOCK,
        )
    else:
        codes = codes_t
    word_sums = [
        te.compute(
            (out_features, rows_pad // ROW_ALIGN, 2, WORDS),
            _word_sums(codes, table, start, stop),
            name=f"{ACC_BLOCK_PREFIX}{index}",
        )
        for index, (start, stop) in enumerate(codebook_chunks(num_codebooks, chunk))
    ]

    # One chunk's accumulator fits int16; half the bytes of int32 keep the dense epilogue's
    # decoded rows under TVM's 1 KiB stack-allocation limit (else a workspace call per step).
    acc_dtype = DECODED_DTYPE if len(word_sums) == 1 else "int32"

    def decoded(n, m):
        total = _row_accumulator(word_sums[0], n, m)
        for sums in word_sums[1:]:
            total = total + _row_accumulator(sums, n, m)
        return total.astype(acc_dtype)

    return [te.compute((out_features, rows_pad), decoded, name=DECODE_BLOCK)]


def _row_accumulator(acc: te.Tensor, n, m):
    """The int32 ``acc`` of row ``m``, channel ``n`` decoded from one chunk's word sums."""
    num_codebooks = int(acc.op.reduce_axis[0].dom.extent)
    block, within = m // ROW_ALIGN, m % ROW_ALIGN
    word = (within // (2 * PAIR_SPAN)) * PAIR_SPAN + within % PAIR_SPAN
    high = acc[n, block, 1, word].astype("int32")
    low = tirx.bitwise_and(acc[n, block, 0, word].astype("int32") - high * 256, 0xFFFF)
    value = tirx.Select((within // PAIR_SPAN) % 2 == 1, high, low)
    return value - tirx.const(TABLE_BIAS * num_codebooks, "int32")


def scaled_output(accs: list[te.Tensor], scale: te.Tensor, bias: te.Tensor, n, m, relu: bool):
    """``(sum of the accumulators in int32) * scale[n] + bias[n]`` at ``(n, m)``, optional ReLU
    (``accs`` from ``shuffle_accumulators``)."""
    total = accs[0][n, m].astype("int32")
    for acc in accs[1:]:
        total = total + acc[n, m].astype("int32")
    value = total.astype("float32") * scale[n] + bias[n]
    return tirx.max(value, tirx.const(0.0, "float32")) if relu else value


def lookup_dense_shuffle(
    codes_t: te.Tensor,
    table: te.Tensor,
    scale: te.Tensor,
    bias: te.Tensor,
    relu: bool = False,
    row_align: int = ROW_ALIGN,
    chunk: int = INT16_SAFE_CODEBOOKS,
) -> te.Tensor:
    """``Y[M, N]`` float32 from codes ``[C, M]`` uint8 and a table ``[N, C, K]`` int8."""
    rows = int(codes_t.shape[1])
    out_features = int(table.shape[0])
    accs = shuffle_accumulators(codes_t, table, row_align, chunk)
    return te.compute(
        (rows, out_features),
        lambda m, n: scaled_output(accs, scale, bias, n, m, relu),
        name=OUT_BLOCK,
    )


def lookup_dense_shuffle_func(
    rows: int, num_codebooks: int, out_features: int, relu: bool = False,
    chunk: int = INT16_SAFE_CODEBOOKS, num_centroids: int = NUM_CENTROIDS,
) -> tirx.PrimFunc:
    """``(codes [C, M] u8, table [N, C, K] i8, scale [N], bias [N]) -> y [M, N] f32``."""
    codes = te.placeholder((num_codebooks, rows), CODE_DTYPE, "codes")
    table = te.placeholder((out_features, num_codebooks, num_centroids), TABLE_DTYPE, "table")
    scale = te.placeholder((out_features,), "float32", "scale")
    bias = te.placeholder((out_features,), "float32", "bias")
    out = lookup_dense_shuffle(codes, table, scale, bias, relu, chunk=chunk)
    return to_prim_func([codes, table, scale, bias, out], LOOKUP_DENSE_SHUFFLE, relu=int(relu))
