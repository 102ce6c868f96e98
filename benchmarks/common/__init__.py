"""Helpers shared by the benchmarks: timing, the peer frameworks, machine facts, kernel builds."""
