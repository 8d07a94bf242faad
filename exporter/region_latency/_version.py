"""The package version, in a module of its own: anything may import it without importing the package's API
(whose imports reach the probes, which need the version for their User-Agent)."""

__version__ = "0.1.0"
