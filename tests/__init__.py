"""meshlib's tests: a package tree mirroring the code, so shared helpers import by name."""
