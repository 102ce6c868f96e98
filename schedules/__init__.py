"""TE compute of the LUT primitives, their PrimFunc builders and the per-target schedule rules."""
