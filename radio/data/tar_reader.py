"""Streaming WebDataset tar reading: member headers, sample grouping, seeks past unowned data.

A sample is a run of consecutive members whose paths agree up to the first dot of the basename
(``dir/a.b.jpg`` -> key ``dir/a``, extension ``b.jpg``). Only headers are read for samples the caller
does not own; their data is skipped by seeking. Truncated or corrupt archives raise ``TarFormatError``
after the complete samples before the damage; ``shard_records.ShardReader``, the one reader of samples,
reports that as a problem instead of raising, so one bad file never stops a run.
"""

import os
from dataclasses import dataclass
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple

BLOCK = 512
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tiff", "img")


class TarFormatError(Exception):
    """The archive cannot be read further; ``reason`` is a counter name such as ``error/truncated_tar``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class Member:
    path: str
    data_offset: int  # byte offset of the member's data in the archive
    size: int  # bytes
    entry_offset: int  # byte offset of its first header (long-name/pax headers included)
    end_offset: int  # byte offset just past its padded data


@dataclass
class SampleEntry:
    """One grouped sample: ``members`` maps extension (``jpg``, ``b.jpg``, ``json``...) to its member."""

    key: str
    index: int  # position of the sample in its shard, counting from 0
    members: Dict[str, Member]
    end_offset: int  # where the next sample's headers start: a resume point
    duplicate_members: int = 0  # members repeating an extension of the sample (the first one is used)


def split_member_path(path: str) -> Tuple[str, str]:
    """``dir/a.b.jpg`` -> (``dir/a``, ``b.jpg``); a name without a dot has an empty extension."""
    folder, _, basename = path.rpartition("/")
    stem, _, extension = basename.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, extension


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def _checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == computed


def _pax_records(data: bytes) -> Dict[str, str]:
    records = {}
    position = 0
    while position < len(data):
        space = data.index(b" ", position)
        length = int(data[position:space])
        keyword, _, value = data[space + 1 : position + length - 1].partition(b"=")
        records[keyword.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        position += length
    return records


def iter_members(stream: BinaryIO, file_size: int, start_offset: int = 0) -> Iterator[Member]:
    """Regular-file members from ``start_offset`` on (a header boundary). Raises ``TarFormatError``."""
    offset = start_offset
    long_name: Optional[str] = None
    pax: Dict[str, str] = {}
    entry_offset = offset
    while True:
        stream.seek(offset)
        block = stream.read(BLOCK)
        if len(block) == 0:
            return  # archives without the two zero end blocks are common; EOF at a boundary is fine
        if len(block) < BLOCK:
            raise TarFormatError("error/truncated_tar", f"header cut short at byte {offset}")
        if block == bytes(BLOCK):
            return
        if not _checksum_ok(block):
            raise TarFormatError("error/corrupt_tar", f"bad header checksum at byte {offset}")
        size = _octal(block[124:136])
        data_offset = offset + BLOCK
        end_offset = data_offset + (size + BLOCK - 1) // BLOCK * BLOCK
        if data_offset + size > file_size:
            raise TarFormatError("error/truncated_tar", f"member at byte {offset} runs past the end of the file")
        kind = block[156:157]
        if kind in (b"L", b"x"):
            stream.seek(data_offset)
            data = stream.read(size)
            if kind == b"L":
                long_name = data.rstrip(b"\0").decode("utf-8", "replace")
            else:
                try:
                    pax = _pax_records(data)
                except ValueError:
                    raise TarFormatError("error/corrupt_tar", f"malformed pax header at byte {offset}")
            offset = end_offset
            continue
        if kind in (b"0", b"\0", b"7"):
            name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if block[257:262] == b"ustar":
                prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
                if prefix:
                    name = f"{prefix}/{name}"
            path = pax.get("path") or long_name or name
            if "size" in pax:
                size = int(pax["size"])
                end_offset = data_offset + (size + BLOCK - 1) // BLOCK * BLOCK
                if data_offset + size > file_size:
                    raise TarFormatError("error/truncated_tar", f"member {path} runs past the end of the file")
            while path.startswith("./"):
                path = path[2:]
            yield Member(path, data_offset, size, entry_offset, end_offset)
        long_name, pax = None, {}
        offset = end_offset
        entry_offset = offset


def iter_samples(
    stream: BinaryIO, file_size: int, start_offset: int = 0, start_index: int = 0
) -> Iterator[SampleEntry]:
    """Group consecutive members by key; yields samples in archive order. Raises ``TarFormatError``
    (after yielding every complete sample before the damage)."""
    current: Optional[SampleEntry] = None
    index = start_index
    try:
        for member in iter_members(stream, file_size, start_offset):
            key, extension = split_member_path(member.path)
            if current is not None and key == current.key:
                if extension in current.members:
                    current.duplicate_members += 1
                else:
                    current.members[extension] = member
                current.end_offset = member.end_offset
                continue
            if current is not None:
                yield current
                index += 1
            current = SampleEntry(key, index, {extension: member}, member.end_offset)
    except TarFormatError:
        if current is not None:
            yield current  # its members are all readable; only what follows is damaged
        raise
    if current is not None:
        yield current


def read_member(stream: BinaryIO, member: Member) -> bytes:
    stream.seek(member.data_offset)
    return stream.read(member.size)


def image_extension(extensions: List[str]) -> Optional[str]:
    """The extension of the sample's image member (``jpg`` or e.g. ``b.jpg``), preferring the order of
    ``IMAGE_EXTENSIONS``; ``None`` when the sample has no image."""
    for wanted in IMAGE_EXTENSIONS:
        for extension in extensions:
            if extension.rpartition(".")[2].lower() == wanted:
                return extension
    return None


def open_shard(path: str) -> Tuple[BinaryIO, int]:
    stream = open(path, "rb")
    return stream, os.fstat(stream.fileno()).st_size
