"""LUT-NA's exact look-up forms for arm64 on the emulated ARM64 device (``benchmarks.tmac_arm64.run``)."""
