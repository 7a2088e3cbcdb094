"""Tar reading: member names (ustar prefix, GNU long names, pax), grouping, seeking to a resume point."""

import io
import tarfile

import pytest

from tests.data.data_helpers import write_tar
from radio.data.tar_reader import TarFormatError, image_extension, iter_samples, open_shard, split_member_path


@pytest.mark.parametrize(
    "path,key,extension",
    [
        ("a.jpg", "a", "jpg"),
        ("a.b.jpg", "a", "b.jpg"),
        ("dir/sub.dir/x.seg.png", "dir/sub.dir/x", "seg.png"),
        ("noext", "noext", ""),
    ],
)
def test_key_is_the_path_up_to_the_first_dot_of_the_basename(path, key, extension):
    assert split_member_path(path) == (key, extension)


def test_image_extension_prefers_images_and_reads_the_last_suffix():
    assert image_extension(["json", "b.jpg"]) == "b.jpg"
    assert image_extension(["txt", "cls"]) is None
    assert image_extension(["png", "jpg"]) == "jpg"
    assert image_extension(["JPEG"]) == "JPEG"


def samples_of(path, offset=0, index=0):
    stream, size = open_shard(path)
    with stream:
        return [(s.index, s.key, sorted(s.members), s.end_offset) for s in iter_samples(stream, size, offset, index)]


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_and_non_ascii_names_in_every_tar_format(tmp_path, tar_format):
    # ustar holds 155 + 100 characters (prefix + name); GNU and pax have no limit.
    long_key = "folder_" * 20 + "é/" + ("k" * 90 if tar_format == tarfile.USTAR_FORMAT else "k" * 300)
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tar_format) as archive:
        for name in (f"{long_key}.jpg", f"{long_key}.json", "short.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 3
            archive.addfile(info, io.BytesIO(b"abc"))
    assert [(i, k, m) for i, k, m, _ in samples_of(path)] == [(0, long_key, ["jpg", "json"]), (1, "short", ["jpg"])]


def test_grouping_is_by_consecutive_members_and_resume_offsets_seek(tmp_path):
    path = tmp_path / "s.tar"
    write_tar(path, [("a.jpg", b"1"), ("a.json", b"{}"), ("b.jpg", b"2"), ("a.cls", b"3"), ("c.jpg", b"4")])
    samples = samples_of(path)
    assert [(i, k, m) for i, k, m, _ in samples] == [
        (0, "a", ["jpg", "json"]),
        (1, "b", ["jpg"]),
        (2, "a", ["cls"]),
        (3, "c", ["jpg"]),
    ]
    resumed = samples_of(path, offset=samples[1][3], index=2)
    assert resumed == samples[2:]


def test_truncation_raises_after_the_complete_samples(tmp_path):
    path = tmp_path / "s.tar"
    write_tar(path, [("a.jpg", b"x" * 3000), ("b.jpg", b"y" * 3000)])
    data = path.read_bytes()
    path.write_bytes(data[:4000])
    stream, size = open_shard(str(path))
    seen = []
    with stream, pytest.raises(TarFormatError) as error:
        for sample in iter_samples(stream, size):
            seen.append(sample.key)
    assert error.value.reason == "error/truncated_tar" and seen == ["a"]
