"""What the tests and the benchmarks share: stand-in frames and models, reference passes, a
local cloud server, the codec fuzzer, benchmark tables, and the link-emulation guard.

The library never imports this package (tests/test_layers enforces it); tests and
benchmarks import it, never each other.
"""
