"""LUT-NA's exact mode: quantized layers computed by table lookup, bit-exact against integer GEMM.

* ``reference`` — NumPy integer reference: weight/activation quantization, integer GEMM, and the
  exact LUT decomposition (bit planes x groups of 4 activations, shift-and-add).
* ``cost`` — per-layer / per-model operation counts (look-ups, adds, shifts, table bytes) against
  a traditional full-product LUT and plain MACs, with documented area/energy parameters.
* ``plan`` — the versioned exact plan (bits and scales per layer, bound by weight fingerprint).

Nothing here imports TVM or torch; the compiled kernel lives in ``schedules.exact_lut_compute``.
"""
