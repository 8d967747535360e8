import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_puppets.segments import Segment, plan_segments


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 20000),
    length=st.integers(2, 2000),
    overlap_frac=st.floats(0, 0.95),
)
def test_cores_cover_every_frame_exactly_once(n, length, overlap_frac):
    overlap = min(int(overlap_frac * length), length - 1)
    segs = plan_segments(n, length, overlap)
    covered = [0] * n
    for s in segs:
        for f in range(s.core_start, s.core_stop):
            covered[f] += 1
    assert covered == [1] * n
    for k, s in enumerate(segs):
        assert s.index == k
        assert 0 <= s.start <= s.core_start < s.core_stop <= s.stop <= n
        assert s.stop - s.start <= length
    for a, b in zip(segs, segs[1:]):
        # consecutive segments share exactly `overlap` frames (clipped by the video end), never a gap
        assert a.stop - b.start == min(overlap, a.stop - b.start)
        assert a.stop - b.start >= 0 and b.start > a.start
        if overlap and b.stop < n:
            assert a.stop - b.start == overlap
    assert segs[0].start == 0 and segs[-1].stop == n


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 5000), length=st.integers(16, 600))
def test_segments_are_balanced(n, length):
    overlap = length // 10
    segs = plan_segments(n, length, overlap)
    if len(segs) > 1:
        sizes = [s.stop - s.start for s in segs]
        # no stub at the end: every segment is at least half as long as the longest
        assert min(sizes) >= max(sizes) // 2
        # as few segments as the length allows
        assert len(segs) == -(-(n - overlap) // (length - overlap))


def test_short_video_is_one_segment():
    (s,) = plan_segments(50, 300, 30)
    assert (s.start, s.stop, s.core_start, s.core_stop) == (0, 50, 0, 50)


@pytest.mark.parametrize("n,length,overlap", [(0, 10, 2), (10, 1, 0), (10, 10, 10), (10, 10, -1)])
def test_bad_arguments(n, length, overlap):
    with pytest.raises(ValueError):
        plan_segments(n, length, overlap)


def test_segment_from_file_attributes():
    """A segment read back from HDF5 attributes (numpy integers, extra keys) is the segment written."""
    for seg in plan_segments(1000, 300, 40):
        attrs = {k: np.int64(v) for k, v in seg.to_dict().items() if k != "index"}
        back = Segment.from_attrs({**attrs, "segment": np.int64(seg.index), "video": "v"})
        assert back == seg and all(type(v) is int for v in back.to_dict().values())
