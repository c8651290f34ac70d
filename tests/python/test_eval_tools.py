"""The paper's table at scale (issue #33): tools/eval_ray.py on a local Ray runtime and
tools/eval_slurm.sh under a stand-in `sbatch` give the table the unsharded `clipshape eval` prints.

Both drive the real `clipshape` program with the tiny models and the tiny Inception network.
"""

import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPO, golden, needs_models

CLIPSHAPE = os.path.join(REPO, "target", "release", "clipshape")
INCEPTION = os.path.join(REPO, "tests", "fixtures", "inception", "tiny_inception.pth")
CLIP = ["--clip", golden("clip_jit.pt"), "--vocab", golden("bpe_simple_vocab_16e6.txt.gz")]

pytestmark = [needs_models, pytest.mark.skipif(not os.path.exists(CLIPSHAPE),
                                               reason="needs %s (cargo build --release)" % CLIPSHAPE)]


def run(args, **kw):
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    assert done.returncode == 0, "%s\n%s" % (" ".join(args), done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    out = tmp_path_factory.mktemp("shift") / "edit"
    run([CLIPSHAPE, "--device", "cpu", "edit", golden("e4e.pt"), "face", "--seed", "1", "--steps", "2",
         "--strengths=0", "--out", str(out)] + CLIP)
    return str(out / "shift.safetensors")


def eval_args(shift, seeds):
    return [shift, "--model", golden("e4e.pt"), "--seeds", seeds, "--inception", INCEPTION] + CLIP


def unsharded(shift, seeds):
    return json.loads(run([CLIPSHAPE, "--device", "cpu", "eval"] + eval_args(shift, seeds) + ["--json"]))


def same_rows(got, want):
    assert [r["strength"] for r in got] == [r["strength"] for r in want]
    for g, w in zip(got, want):
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, g, w)
            else:
                assert g[key] == value, (key, g, w)


@pytest.fixture(scope="module")
def ray_here():
    """Ray installed and able to start a local runtime on this machine (else the test skips)."""
    pytest.importorskip("ray")
    done = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False); "
                           "ray.shutdown()"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip("Ray cannot start a local runtime here: " + done.stderr.strip()[-300:])


def test_ray_shards_on_a_local_runtime_give_the_unsharded_table(shift, tmp_path, ray_here):
    out = tmp_path / "stats"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_IMPORT_WARNING="1")
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "eval_ray.py"), "--shards", "4",
                           "--num-cpus", "2", "--out", str(out), "--clipshape", CLIPSHAPE, "--json", "--"]
                          + eval_args(shift, "0-15"), capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    same_rows(json.loads(done.stdout), unsharded(shift, "0-15"))
    assert sorted(os.listdir(out)) == ["shard-%d-of-4.st" % i for i in range(4)]
    assert "shard 3/4 done" in done.stderr or "(4 of 4" in done.stderr, done.stderr[-2000:]


def test_ray_names_a_shard_that_keeps_failing(shift, tmp_path, ray_here):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_IMPORT_WARNING="1")
    args = eval_args(shift, "0-3")
    args[args.index("--inception") + 1] = str(tmp_path / "no-such-inception.pth")
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "eval_ray.py"), "--shards", "2",
                           "--num-cpus", "2", "--retries", "0", "--clipshape", CLIPSHAPE, "--"] + args,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0
    assert "no-such-inception.pth" in done.stderr and "shard" in done.stderr, done.stderr[-3000:]


SBATCH = r'''#!/usr/bin/env bash
# A stand-in for Slurm's sbatch: runs a --wrap job at once (every task of an --array), in order;
# a job with --dependency=afterok:J runs only when job J succeeded. Prints the job id (--parsable).
set -u
log="$(dirname "$0")/jobs"
array="" wrap="" dep="" output=""
for a in "$@"; do
    case "$a" in
        --array=*) array=${a#--array=} ;;
        --wrap=*) wrap=${a#--wrap=} ;;
        --dependency=afterok:*) dep=${a#--dependency=afterok:} ;;
        --output=*) output=${a#--output=} ;;
    esac
done
id=$(( $(wc -l < "$log" 2>/dev/null || echo 0) + 100 ))
status=ok
if [ -n "$dep" ] && ! grep -qx "$dep ok" "$log"; then
    status=skipped
elif [ -n "$array" ]; then
    for ((t = ${array%-*}; t <= ${array#*-}; t++)); do
        SLURM_ARRAY_TASK_ID=$t bash -c "$wrap" > "${output//%a/$t}" 2>&1 || status=failed
    done
else
    bash -c "$wrap" > "$output" 2>&1 || status=failed
fi
echo "$id $status" >> "$log"
echo "$id;cluster"
'''


def slurm(tmp_path, n, out, extra, shift, seeds):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(SBATCH)
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), CLIPSHAPE=CLIPSHAPE)
    done = subprocess.run(["bash", os.path.join(REPO, "tools", "eval_slurm.sh"), str(n), str(out)] + extra
                          + ["--"] + eval_args(shift, seeds), capture_output=True, text=True, env=env, timeout=900)
    return done, (bin_dir / "jobs").read_text().split("\n") if (bin_dir / "jobs").exists() else []


def test_slurm_array_and_merge_job_give_the_unsharded_table(shift, tmp_path):
    out = tmp_path / "shared folder"  # a space: the job lines quote their paths
    done, jobs = slurm(tmp_path, 3, out, ["--json"], shift, "0-8")
    assert done.returncode == 0, done.stderr
    assert jobs[:2] == ["100 ok", "101 ok"], (jobs, done.stdout)
    assert "shards: job 100" in done.stdout and "merge: job 101" in done.stdout, done.stdout
    same_rows(json.loads((out / "table.md").read_text()), unsharded(shift, "0-8"))
    assert sorted(p for p in os.listdir(out) if p.endswith(".st")) == ["shard-%d-of-3.st" % i for i in range(3)]


def test_slurm_merge_job_does_not_run_when_a_shard_failed(shift, tmp_path):
    out = tmp_path / "out"
    args_shift = str(tmp_path / "missing-shift.safetensors")
    done, jobs = slurm(tmp_path, 2, out, [], args_shift, "0-3")
    assert done.returncode == 0, done.stderr
    assert jobs[:2] == ["100 failed", "101 skipped"], jobs
    assert "missing-shift.safetensors" in (out / "shard-0-of-2.log").read_text()
    assert not (out / "table.md").exists()


def test_slurm_refuses_a_count_that_is_not_a_number(tmp_path):
    done = subprocess.run(["bash", os.path.join(REPO, "tools", "eval_slurm.sh"), "four", str(tmp_path), "--",
                           "x"], capture_output=True, text=True)
    assert done.returncode == 2 and "N must be a positive number, got four" in done.stderr, done.stderr


def test_neither_tool_writes_over_a_file_in_the_folder_it_is_given(shift, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "shard-1-of-2.st").write_text("my notes")
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "eval_ray.py"), "--shards", "2",
                           "--out", str(out), "--clipshape", CLIPSHAPE, "--"] + eval_args(shift, "0-3"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "shard-1-of-2.st exists" in done.stderr, done.stderr[-2000:]
    done, jobs = slurm(tmp_path, 2, out, [], shift, "0-3")
    assert done.returncode == 2 and "shard-1-of-2.st exists" in done.stderr and jobs == [], done.stderr
    (out / "shard-1-of-2.st").unlink()
    (out / "table.md").write_text("my table")
    done, jobs = slurm(tmp_path, 2, out, [], shift, "0-3")
    assert done.returncode == 2 and "table.md exists" in done.stderr and jobs == [], done.stderr
    assert (out / "table.md").read_text() == "my table" and os.listdir(out) == ["table.md"]
