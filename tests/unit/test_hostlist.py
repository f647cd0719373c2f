"""主机列表写法的展开与压缩（SLURM_JOB_NODELIST 的形状）。"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conductor.hostlist import compress, compress_counts, expand


@pytest.mark.parametrize(
    ("names", "hostlist"),
    [
        (["node01", "node02", "node03", "node07"], "node[01-03,07]"),
        (["node3", "gpu1", "node1", "node2", "login"], "gpu1,login,node[1-3]"),
        (["a9", "a10", "a11"], "a[9-11]"),
        (["x"], "x"),
        (["n0", "n10"], "n[0,10]"),
        (["n01", "n1"], "n01,n1"),  # 补零宽度不同是不同的节点
        # 跨过十位：node10 写成两位正好是补零宽度 2 的写法，同 Slurm 合在一个范围里
        (["node08", "node09", "node10", "node11", "node12"], "node[08-12]"),
        (["n098", "n099", "n100", "n101"], "n[098-101]"),
        (["n08", "n100"], "n[08,100]"),
        ([], ""),
    ],
)
def test_compress_like_slurm(names: list[str], hostlist: str) -> None:
    assert compress(names) == hostlist


def test_expand() -> None:
    assert expand("node[01-03,07],gpu1") == ["node01", "node02", "node03", "node07", "gpu1"]
    assert expand("rack[1-2]-n[1-2]") == ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]
    with pytest.raises(ValueError, match="数字范围"):
        expand("node[a-b]")


@given(
    st.sets(
        st.builds(
            "{}{}".format,
            st.sampled_from(["node", "gpu", "n"]),
            st.one_of(st.integers(0, 120).map(str), st.integers(0, 99).map("{:03d}".format)),
        ),
        max_size=30,
    )
)
def test_compress_then_expand_gives_the_same_nodes(names: set[str]) -> None:
    assert set(expand(compress(names))) == names


@pytest.mark.parametrize(
    ("counts", "text"),
    [([2, 2, 2, 1], "2(x3),1"), ([4], "4"), ([1, 2, 1], "1,2,1"), ([3, 3], "3(x2)"), ([], "")],
)
def test_counts_per_node_like_slurm(counts: list[int], text: str) -> None:
    assert compress_counts(counts) == text
