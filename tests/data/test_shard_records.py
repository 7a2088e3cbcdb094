"""The one shard reader: records with sidecars and labels, residue classes, resume points, and every kind of
bad data reported (never raised) with its reason and scope."""

import pytest

from radio.data.shard_records import LAYOUT, REST_OF_SHARD, SAMPLE, ShardReader
from tests.data.data_helpers import write_tar


def read_all(path, **kwargs):
    problems = []
    shard = ShardReader(str(path), problems.append, **kwargs)
    records = [(r.key, r.meta, r.label, r.read_image()) for r in shard]
    return records, [(p.reason, p.key, p.scope) for p in problems], shard


def test_records_carry_sidecar_label_and_image(tmp_path):
    path = tmp_path / "s.tar"
    write_tar(
        path, [("a.jpg", b"A"), ("a.json", b'{"uid": "u"}'), ("a.cls", b" 3\n"), ("b.x.png", b"B"), ("c.txt", b"")]
    )
    records, problems, shard = read_all(path)
    assert records == [("a", {"uid": "u"}, 3, b"A"), ("b", None, -1, b"B"), ("c", None, -1, None)]
    assert problems == [("skipped/no_image", "c", SAMPLE)]
    assert shard.read_to_end and shard.index == 3


@pytest.mark.parametrize(
    "member,data,reason",
    [
        ("json", b"{not json", "error/bad_json"),
        ("json", b"[1, 2]", "error/bad_json"),  # JSON, but not an object
        ("json", b"\xff\xfe", "error/bad_json"),
        ("json", b"", "error/empty_member"),
        ("cls", b"three", "error/bad_cls"),
        ("cls", "３".encode(), "error/bad_cls"),  # not ASCII
    ],
)
def test_unreadable_sidecars_are_reported_and_ignored(tmp_path, member, data, reason):
    write_tar(tmp_path / "s.tar", [("a.jpg", b"A"), (f"a.{member}", data), ("b.jpg", b"B")])
    records, problems, shard = read_all(tmp_path / "s.tar")
    assert records == [("a", None, -1, b"A"), ("b", None, -1, b"B")]
    assert problems == [(reason, "a", SAMPLE)] and shard.read_to_end


def test_residue_classes_split_samples_and_every_reader_sees_the_layout(tmp_path):
    path = tmp_path / "s.tar"
    write_tar(
        path,
        [(f"k{i}.jpg", bytes([i])) for i in range(5)]
        + [("k1.jpg", b"again"), ("k5.jpg", b"5"), ("k5.jpg", b"twice"), ("k6.json", b"{")],
    )
    readers = [read_all(path, residue=r, modulus=3) for r in range(3)]
    keys = [[key for key, *_ in records] for records, _, _ in readers]
    assert keys == [["k0", "k3", "k5"], ["k1", "k4", "k6"], ["k2", "k1"]]  # sample indices 0..7 modulo 3
    layout = [("format/repeated_key", "k1", LAYOUT), ("format/duplicate_member", "k5", LAYOUT)]
    for reader, (_, problems, _) in enumerate(readers):
        assert [p for p in problems if p[2] == LAYOUT] == layout
        owned = [("error/bad_json", "k6", SAMPLE), ("skipped/no_image", "k6", SAMPLE)] if reader == 1 else []
        assert [p for p in problems if p[2] == SAMPLE] == owned


def test_a_reader_resumes_at_the_point_another_stopped(tmp_path):
    path = tmp_path / "s.tar"
    write_tar(path, [(f"k{i}.jpg", bytes([i])) for i in range(6)])
    first = ShardReader(str(path), pytest.fail, residue=1, modulus=2)
    records = iter(first)
    assert next(records).key == "k1"
    assert (first.index, first.read_to_end) == (2, False)
    records.close()
    resumed, _, shard = read_all(path, offset=first.offset, index=first.index, residue=1, modulus=2)
    assert [key for key, *_ in resumed] == ["k3", "k5"] and shard.index == 6
    assert ShardReader(str(path), pytest.fail, offset=first.offset, index=first.index).count() == 4


def test_damage_is_reported_once_and_ends_the_shard(tmp_path):
    write_tar(tmp_path / "cut.tar", [(f"t{i}.jpg", b"x" * 3000) for i in range(4)])
    with open(tmp_path / "cut.tar", "r+b") as stream:
        stream.truncate(8000)  # inside the third member
    records, problems, shard = read_all(tmp_path / "cut.tar")
    assert [key for key, *_ in records] == ["t0", "t1"] and not shard.read_to_end
    assert problems == [("error/truncated_tar", "", REST_OF_SHARD)]
    assert ShardReader(str(tmp_path / "cut.tar"), lambda problem: None).count() == 2

    write_tar(tmp_path / "bad.tar", [("h0.jpg", b"0")])
    with open(tmp_path / "bad.tar", "r+b") as stream:
        stream.write(b"garbage!")
    assert read_all(tmp_path / "bad.tar")[:2] == ([], [("error/corrupt_tar", "", REST_OF_SHARD)])

    records, problems, shard = read_all(tmp_path / "missing.tar")
    assert (records, problems, shard.read_to_end) == ([], [("error/unreadable_tar", "", REST_OF_SHARD)], False)
