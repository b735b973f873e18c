"""fieldstation: framework and runtime for autonomous field sensor stations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fieldstation")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
