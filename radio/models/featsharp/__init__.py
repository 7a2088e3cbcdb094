"""FeatSharp (NVlabs/FeatSharp, ICML 2025) feature upsamplers as frozen teacher adaptors; see docs/featsharp.md."""

from radio.models.featsharp.adaptor import FeatSharpAdaptor
from radio.models.featsharp.checkpoint import (
    check_featsharp_file,
    load_featsharp,
    parse_upsample_args,
    read_featsharp_file,
)

__all__ = ["FeatSharpAdaptor", "check_featsharp_file", "load_featsharp", "parse_upsample_args", "read_featsharp_file"]
