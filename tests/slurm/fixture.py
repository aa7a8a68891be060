"""Session fixture: a one-node SLURM cluster on this machine (tests/slurm/cluster.sh).

Use from a test module with ``from slurm.fixture import slurm_cluster`` style
imports, or load it by path (see tests/test_slurm_smoke.py); a conftest.py can
instead list it in ``pytest_plugins``.

The fixture
  * installs the Debian packages (slurmctld slurmd slurm-client munge) when a
    SLURM binary is missing and we are root with apt-get (set
    VIRNUC_SLURM_NO_INSTALL=1 to forbid that); skips the test, with the reason,
    only where the binaries are missing and cannot be installed;
  * starts munged + slurmctld + slurmd (state in $VIRNUC_SLURM_DIR, default
    /tmp/virnuc-slurm) with $VIRNUC_SLURM_FAKE_GPUS fake GPUs (default 2, so
    that rules with ``resources: gpu=1`` are scheduled), or reuses a cluster
    that cluster.sh already started there (then it also leaves it running at
    the end; ``SlurmCluster.gpus()`` says how many GPUs that one declares);
  * exports SLURM_CONF for the session and stops everything it started;
  * holds a machine-wide lock (flock on $VIRNUC_SLURM_LOCK, default
    /tmp/virnuc-slurm.lock) for the whole session, so that two test sessions
    on one machine take turns (waiting up to $VIRNUC_SLURM_LOCK_WAIT_S,
    default 900 s): /etc/slurm/slurm.conf is machine-wide, and a session that
    stops the cluster it started would break another one reusing it.

A cluster that is installed but does not come up is a test failure, not a skip.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLUSTER_SH = Path(__file__).with_name("cluster.sh")
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")
DEBIAN_PACKAGES = "slurmctld slurmd slurm-client munge"
DEFAULT_FAKE_GPUS = "2"


def _plugin_missing() -> bool:
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return True
    return False


# A machine with SLURM but not the plugin (a login node after the quick start, which installs
# only '.[test]'): the SLURM tests skip, saying how to run them, before any cluster starts.
needs_plugin = pytest.mark.skipif(
    _plugin_missing(),
    reason="snakemake-executor-plugin-slurm is not installed in this Python: "
    "pip install -e '.[slurm]' to run the SLURM tests",
)


@dataclass
class SlurmCluster:
    state_dir: Path
    conf: Path
    env: dict[str, str] = field(default_factory=dict)

    def jobs(self, job_name: str) -> list[dict[str, str]]:
        """Jobs (finished ones included, for MinJobAge=300 s) with this job name.

        snakemake-executor-plugin-slurm names every job of a run after the run's
        UUID ("SLURM run ID: ..." in snakemake's log) and puts
        ``rule_<rule>[_wildcards_<w>]`` in the job comment.
        """
        out = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--name", job_name, "--format=%i|%T|%k|%C|%m"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        keys = ("jobid", "state", "comment", "cpus", "min_memory")
        return [
            dict(zip(keys, line.split("|"), strict=True))
            for line in out.splitlines()
            if line.strip()
        ]

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (``TresPerJob``, ``JobState``, ``Comment``, ...)."""
        out = self._query(["scontrol", "--oneliner", "show", "job", job_id])
        # values never hold spaces here except Command/WorkDir-like keys we do not read
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def gpus(self) -> int:
        """GPUs (gres ``gpu``) the node declares: 0 where the cluster has none."""
        gres = self._query(["sinfo", "--noheader", "--Node", "--format=%G"]).strip()
        for item in gres.split(","):
            parts = item.split("(")[0].split(":")  # gpu:2, gpu:a100:2, gpu:2(S:0)
            if parts[0] == "gpu" and parts[-1].isdigit():
                return int(parts[-1])
        return 0

    def _query(self, cmd: list[str]) -> str:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, check=True, timeout=30
        ).stdout


def _missing_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if shutil.which(b) is None]


def _run(cmd: str, state_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("VIRNUC_SLURM_FAKE_GPUS", DEFAULT_FAKE_GPUS)
    return subprocess.run(
        ["bash", str(CLUSTER_SH), cmd, str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# The machine lock of this process: descriptor and users. Test modules load this file by path,
# some more than once into the same module (exec_module again): globals() keeps the state, and
# each module's copy of the session fixture counts as one more user of the same lock.
_LOCK = globals().get("_LOCK") or {"fd": None, "users": 0}


def _lock_machine() -> None:
    """Take the machine-wide SLURM test lock for this process (once; counted per user)."""
    if _LOCK["users"] == 0:
        _LOCK["fd"] = _wait_for_lock()
    _LOCK["users"] += 1


def _unlock_machine() -> None:
    _LOCK["users"] -= 1
    if _LOCK["users"] == 0:
        os.close(_LOCK["fd"])  # closing the descriptor drops the flock


def _wait_for_lock() -> int:
    """A descriptor holding the machine-wide lock (waiting for another session to end).

    The kernel drops the lock when the descriptor closes, however this process ends; the
    descriptor is not inherited by the daemons cluster.sh starts.
    """
    path = Path(os.environ.get("VIRNUC_SLURM_LOCK", "/tmp/virnuc-slurm.lock"))
    wait_s = float(os.environ.get("VIRNUC_SLURM_LOCK_WAIT_S", "900"))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(
                    f"another SLURM test session ({holder}) held {path} for over {wait_s:.0f} s",
                    pytrace=False,
                )
            if not told:
                print(f"waiting for the SLURM test lock {path} ({holder})", file=sys.stderr)
                told = True
            time.sleep(1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}".encode(), 0)
    return fd


def _ensure_installed(state_dir: Path) -> None:
    missing = _missing_binaries()
    if not missing:
        return
    why = f"SLURM binaries missing ({', '.join(missing)})"
    if os.environ.get("VIRNUC_SLURM_NO_INSTALL") == "1":
        pytest.skip(f"{why}; VIRNUC_SLURM_NO_INSTALL=1 forbids installing {DEBIAN_PACKAGES}")
    if shutil.which("apt-get") is None:
        pytest.skip(f"{why} and no apt-get here to install {DEBIAN_PACKAGES}")
    if (
        os.geteuid() != 0
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0
    ):
        pytest.skip(f"{why}; not root (no password-less sudo) to apt-get install {DEBIAN_PACKAGES}")
    res = _run("install", state_dir, timeout=900)
    if res.returncode != 0 or _missing_binaries():
        pytest.skip(f"{why} and `cluster.sh install` failed: {res.stderr.strip()[-800:]}")


@pytest.fixture(scope="session")
def slurm_cluster():
    state_dir = Path(os.environ.get("VIRNUC_SLURM_DIR", "/tmp/virnuc-slurm"))
    _ensure_installed(state_dir)
    _lock_machine()
    try:
        yield from _cluster_session(state_dir)
    finally:
        _unlock_machine()


def _cluster_session(state_dir: Path):
    conf = state_dir / "etc" / "slurm.conf"
    started_here = _run("status", state_dir, timeout=60).returncode != 0
    if started_here:
        res = _run("start", state_dir, timeout=180)
        if res.returncode != 0:
            _run("stop", state_dir, timeout=120)
            pytest.fail(
                f"SLURM is installed but the test cluster did not start "
                f"(logs in {state_dir}/log):\n{res.stdout}\n{res.stderr}",
                pytrace=False,
            )
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    env = dict(os.environ)
    # never look like we run inside a SLURM job
    for k in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        if k != "SLURM_CONF":
            del env[k]
    try:
        yield SlurmCluster(state_dir=state_dir, conf=conf, env=env)
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        if started_here:
            res = _run("stop", state_dir, timeout=180)
            if res.returncode != 0:
                print(f"cluster.sh stop failed:\n{res.stderr}")
