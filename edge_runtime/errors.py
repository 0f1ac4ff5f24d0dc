"""One exception family so the CLI can print any expected failure as a single clear line."""

from __future__ import annotations


class EdgepinError(Exception):
    """Base of every expected, user-facing failure (bad input, missing model, stale file)."""


class MediaError(EdgepinError):
    """A media file (image, audio, video) is missing, corrupt, empty or unsupported."""


class NoFaceError(MediaError):
    """An image or frame holds no detectable face."""


class SeveralFacesError(MediaError):
    """An image holds several faces and the face policy forbids choosing one of them."""


class AudioError(MediaError):
    """Audio is unusable: silence only, too short, clipped, or an unsupported rate."""


class DatasetError(EdgepinError):
    """A dataset folder does not have the expected layout or holds no usable samples."""


class ConfigError(EdgepinError):
    """A configuration value or file is invalid."""


class ModelError(EdgepinError):
    """A model or engine file is missing, corrupt, stale, or does not match this machine."""


class DependencyError(EdgepinError):
    """An optional dependency needed for this operation is not installed."""


class GalleryError(EdgepinError):
    """The on-device gallery or audit log is missing, corrupt, locked, newer than this code,
    or its key is wrong: stored identities cannot be trusted or read."""
