#!/usr/bin/env python3
"""The paper's table over a Ray cluster: `clipshape eval` in N shards, each a Ray task running
`clipshape eval … --shard I/N --stats-out FILE` (a CPU or a GPU per task), retried when it
fails; the shards' files come back through Ray's object store (no shared folder needed), are
kept in --out, and `clipshape eval --merge` prints the table the unsharded run would.

    python3 tools/eval_ray.py --shards 64 [--address auto] [--gpus-per-task 1] [--out DIR] \\
        [--reference DIR] [--json] -- SHIFT.safetensors --model MODEL --seeds 0-2999 --inception FILE

Everything after `--` is what `clipshape eval` takes (the shift files and its options); the
`clipshape` program must be on every node's PATH (or give --clipshape). Without --address a
local Ray runtime is started with --num-cpus.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time


def parse(argv):
    if "--" not in argv:
        sys.exit("eval_ray.py: put `clipshape eval`'s arguments after --")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, required=True, help="how many shards (Ray tasks)")
    p.add_argument("--address", help="a running Ray cluster (`auto`, or host:port); default: start a local one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (without --address)")
    p.add_argument("--cpus-per-task", type=float, default=1, help="CPUs a shard holds (default 1)")
    p.add_argument("--gpus-per-task", type=float, default=0, help="GPUs a shard holds (default 0: the CPU)")
    p.add_argument("--threads", type=int, default=None, help="libtorch threads per shard (default: --cpus-per-task)")
    p.add_argument("--retries", type=int, default=3, help="times a failed shard is run again (default 3)")
    p.add_argument("--out", help="where the shards' stats files are kept (default: a new temporary folder)")
    p.add_argument("--clipshape", default="clipshape", help="the clipshape program on the nodes")
    p.add_argument("--reference", help="FID against this folder of pictures (the merge computes it, once)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv[:cut])
    if args.shards < 1:
        p.error("--shards: at least 1")
    return args, argv[cut + 1:]


def option(args, name):
    """The value of `name VALUE` (or name=VALUE) in a list of arguments, else None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def main(argv):
    args, eval_args = parse(argv)
    out_dir = args.out or tempfile.mkdtemp(prefix="clipshape-eval-")
    os.makedirs(out_dir, exist_ok=True)
    for i in range(args.shards):  # never written over: the folder is the person's
        taken = os.path.join(out_dir, "shard-%d-of-%d.st" % (i, args.shards))
        if os.path.lexists(taken):
            sys.exit("eval_ray: %s exists (an earlier run's?): give another --out, or remove it" % taken)
    try:
        import ray  # after the arguments: --help needs no Ray
    except ImportError:
        sys.exit("eval_ray: needs Ray on this machine and the workers (pip install ray)")

    device = "cuda" if args.gpus_per_task > 0 else "cpu"
    threads = args.threads or max(1, int(args.cpus_per_task))
    command = [args.clipshape, "--device", device, "--threads", str(threads), "eval", *eval_args]

    @ray.remote
    def shard(index):
        with tempfile.TemporaryDirectory(prefix="clipshape-shard-") as d:
            out = os.path.join(d, "shard.st")
            done = subprocess.run(command + ["--shard", "%d/%d" % (index, args.shards), "--stats-out", out],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError("shard %d/%d: %s" % (index, args.shards, done.stderr.strip()[-2000:]))
            with open(out, "rb") as f:
                return index, f.read()

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus, log_to_driver=False, include_dashboard=False)
    task = shard.options(num_cpus=args.cpus_per_task, num_gpus=args.gpus_per_task,
                         max_retries=args.retries, retry_exceptions=True)
    pending = [task.remote(i) for i in range(args.shards)]
    t0, files = time.time(), []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                index, data = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                # The shard's own words (its last retry's), not Ray's traceback of the worker.
                print("eval_ray: %s (after %d retries)" % (getattr(e, "cause", None) or e, args.retries),
                      file=sys.stderr)
                return 1
            path = os.path.join(out_dir, "shard-%d-of-%d.st" % (index, args.shards))
            fd, part = tempfile.mkstemp(dir=out_dir, prefix=".shard-", suffix=".part")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(part, path)
            files.append(path)
            print("eval_ray: shard %d/%d done (%d of %d, %.0f s)" % (index, args.shards, len(files), args.shards,
                                                                   time.time() - t0), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    merge = [args.clipshape, "--device", "cpu", "eval", "--merge", *sorted(files)]
    inception = option(eval_args, "--inception")
    if inception:
        merge += ["--inception", inception]
    if args.reference:
        merge += ["--reference", args.reference]
    if args.json:
        merge.append("--json")
    return subprocess.run(merge).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
