import os
from pathlib import Path

import pytest

from aserve.cpus import cgroup_quota, usable_cpus


def fake_root(tmp_path: Path, cgroup: str, files: dict[str, str]) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("cgroup", "files", "quota"),
    [
        ("0::/pod/app\n", {"sys/fs/cgroup/pod/app/cpu.max": "150000 100000\n"}, 1.5),
        ("0::/\n", {"sys/fs/cgroup/cpu.max": "max 100000\n"}, None),
        ("0::/x\n", {"sys/fs/cgroup/unified/x/cpu.max": "200000 100000\n"}, 2.0),  # hybrid
        (
            "4:memory:/m\n1:cpu,cpuacct:/docker/c\n0::/\n",
            {
                "sys/fs/cgroup/cpu/docker/c/cpu.cfs_quota_us": "50000\n",
                "sys/fs/cgroup/cpu/docker/c/cpu.cfs_period_us": "100000\n",
            },
            0.5,
        ),
        (
            "1:cpu,cpuacct:/\n0::/\n",
            {
                "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
            },
            None,
        ),
        ("0::/\n", {}, None),  # nothing mounted where expected
    ],
)
def test_cgroup_quotas(
    tmp_path: Path, cgroup: str, files: dict[str, str], quota: float | None
) -> None:
    assert cgroup_quota(fake_root(tmp_path, cgroup, files)) == quota


def test_the_quota_caps_the_affinity_and_rounds_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    root = fake_root(tmp_path, "0::/\n", {"sys/fs/cgroup/cpu.max": "50000 100000\n"})
    assert usable_cpus(str(root)).usable == 1
    unlimited = fake_root(tmp_path / "u", "0::/\n", {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    cpus = usable_cpus(str(unlimited))
    assert (cpus.usable, cpus.affinity, cpus.quota) == (affinity, affinity, None)
    assert str(cpus) == f"{affinity} usable (affinity {affinity}, cgroup quota none)"
