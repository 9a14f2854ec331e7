"""The ray executor's cost per trial, next to plain Ray tasks and Ray Tune (issue 12).

On one local Ray instance started here (``ray start --head --block``, 2 CPUs, 127.0.0.1),
in one go:

* ``ours``: ``cerebros-bridge run`` of ``--trials`` trivial trials with ``executor.kind =
  "ray"`` (the fixture ``tests/fixtures/ray_fixture.py`` returns each report at once), the
  store, events and MLflow outbox included (``MLFLOW_TRACKING_URI=off``: items stay queued);
  per trial: the time between trial ends once the first ``2 x parallelism`` trials ended
  (``steady``: a new Ray job starts its worker processes on its first tasks), and the whole
  command's wall time divided by the trials (``total``: start-up, ``ray.init``, the dataset
  load and the workers' start included);
* ``ray``: the same number of plain Ray tasks that return at once (``num_cpus=1``, all
  submitted, then ``ray.get``), after a warm-up; and again with at most ``--parallelism``
  in flight, one submitted as one ends (what our executor does: the context of the ratio);
* ``tune``: Ray Tune running the same trivial function as a function trainable
  (``--tune-samples`` samples);

with ``--rounds N``, ours and the plain tasks are measured N times in turn on the same
cluster (Ray Tune once) and the medians are reported: on a 2-vCPU machine one round's
figures move by 10-20 %;

then the scale-out figure: ``--burn-trials`` CPU-bound trials of ``--burn`` seconds each on a
cluster of one 1-CPU node, then of two (a second ``ray start --address`` on this machine),
trials/s with two nodes over one (goal >= 1.8).

Every Ray process this script starts is in a process group of its own and is stopped at the
end (SIGTERM, then SIGKILL to that group), also on failure.

    cargo build --release
    .venv/bin/python benches/ray_overhead.py                      # the issue's sizes
    .venv/bin/python benches/ray_overhead.py --trials 200 --tune-samples 20 --burn-trials 8
    .venv/bin/python benches/ray_overhead.py --rounds 5 --tune-samples 5 --burn-trials 2

``--bin`` picks another CLI binary (default ``target/release/cerebros-bridge``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Ray's token authentication off for this loopback-only cluster and its clients (unset, Ray
# turns it on whenever ~/.ray/auth_token exists, and `ray status` then cannot connect).
os.environ["RAY_AUTH_MODE"] = "disabled"


def _spec(path: Path, trials: int, parallelism: int) -> None:
    path.write_text(
        f"""name = "ray-overhead"
dataset = "sklearn:iris"
seed = 1
[budget]
trials = {trials}
epochs = 1
parallelism = {parallelism}
trial_timeout_ms = 600000
"""
    )


class Node:
    """One ``ray start --block`` in its own process group."""

    def __init__(self, args: list[str], knobs: Path, log: Path) -> None:
        env = dict(os.environ, RAY_FIXTURE_DIR=str(knobs))
        self.log = log
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", *args, "--node-ip-address=127.0.0.1"]
            + ["--disable-usage-stats", "--block"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def address(self) -> str:
        deadline = time.time() + 120
        while time.time() < deadline:
            found = re.search(r"ray start --address='([^']+)'", self.log.read_text())
            if found:
                return found.group(1)
            time.sleep(0.2)
        raise RuntimeError(f"the Ray head did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _wait_for_nodes(address: str, count: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        out = subprocess.run(
            [str(VENV_BIN / "ray"), "status", f"--address={address}"],
            capture_output=True,
            text=True,
        )
        out = out.stdout + out.stderr
        active = out.split("Active:")[-1].split("Pending:")[0]
        if active.count("node_") >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the cluster never had {count} nodes:\n{out}")


def ours(binary: Path, address: str, work: Path, trials: int, parallelism: int) -> dict:
    """One CLI run of ``trials`` trivial trials through the ray executor."""
    spec = work / f"spec-{trials}-{time.time_ns()}.toml"
    _spec(spec, trials, parallelism)
    env = dict(
        os.environ,
        CEREBROS_STORE_URL=f"sqlite://{work / 'store.db'}",
        CEREBROS_MODULE="ray_fixture",
        CEREBROS_REPO=str(ROOT / "tests" / "fixtures"),
        CEREBROS_EXECUTOR="ray",
        CEREBROS_EXECUTOR_ADDRESS=address,
        MLFLOW_TRACKING_URI="off",
    )
    started = time.perf_counter()
    done = subprocess.run(
        [str(binary), "run", str(spec), "--json"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run failed: {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    assert doc["run"]["trials_completed"] == trials, doc["run"]
    stamps = [
        (_stamp(t["started_at"]), _stamp(t["finished_at"]))
        for t in doc["trials"]
        if t.get("started_at") and t.get("finished_at")
    ]
    # Steady state: from the end of the first 2 x parallelism trials (a Ray job starts its
    # workers on its first tasks) to the end of the last one.
    ends = sorted(end for _, end in stamps)
    warm = min(2 * parallelism, len(ends) - 1)
    steady = (ends[-1] - ends[warm - 1]) / (len(ends) - warm) * len(ends) if warm else 0.0
    if steady <= 0.0:  # too few trials for a steady state (or all ended in one millisecond)
        steady = wall
    nodes = {t["placement"]["node_id"] for t in doc["trials"]}
    return {"wall_s": wall, "steady_s": steady, "trials": trials, "nodes": len(nodes)}


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def plain_and_tune(address: str, tasks: int, window: int, samples: int, work: Path) -> dict:
    """Plain Ray tasks (all at once, then ``window`` at a time) and Ray Tune (``samples``;
    none when 0), in a driver of their own on the same cluster."""
    code = f"""
import json, time, ray
from concurrent.futures import FIRST_COMPLETED, wait
from ray import tune
ray.init(address={address!r}, log_to_driver=False)

@ray.remote(num_cpus=1, max_retries=0)
def trivial():
    return {{"val_accuracy": 0.5}}

ray.get([trivial.remote() for _ in range(100)])  # warm-up: workers started
t = time.perf_counter()
ray.get([trivial.remote() for _ in range({tasks})])
plain = time.perf_counter() - t

t = time.perf_counter()
in_flight, sent = set(), 0
while sent < {tasks} or in_flight:
    while len(in_flight) < {window} and sent < {tasks}:
        in_flight.add(trivial.remote().future())
        sent += 1
    _, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
windowed = time.perf_counter() - t

def trainable(config):
    return {{"val_accuracy": 0.5}}

t = time.perf_counter()
if {samples}:
  tune.Tuner(
    trainable,
    param_space={{"x": tune.uniform(0, 1)}},
    tune_config=tune.TuneConfig(num_samples={samples}),
    run_config=tune.RunConfig(storage_path={str(work / "tune")!r}, verbose=0),
  ).fit()
tuned = time.perf_counter() - t
print(json.dumps({{"plain_s": plain, "windowed_s": windowed, "tune_s": tuned}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Ray driver failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--tune-samples", type=int, default=200)
    parser.add_argument("--burn", type=float, default=1.0)
    parser.add_argument("--burn-trials", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure ours and the plain tasks this often"
    )
    parser.add_argument("--json", type=Path, help="write the measurements to this file")
    parser.add_argument("--bin", type=Path, default=ROOT / "target/release/cerebros-bridge")
    args = parser.parse_args()
    if not args.bin.exists():
        sys.exit(f"build the CLI first: cargo build --release ({args.bin} is missing)")
    # A SIGTERM (`timeout`) unwinds through the `finally` below, which stops the nodes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    nodes: list[Node] = []
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="rayb-", dir="/tmp") as scratch:
        work = Path(scratch)
        knobs = work / "knobs"
        knobs.mkdir()
        try:
            # 1. Overhead: one node, 2 CPUs.
            nodes.append(
                Node(
                    [
                        "--head",
                        "--port=0",
                        "--num-cpus=2",
                        "--include-dashboard=false",
                        f"--temp-dir={work}/ray",
                    ],
                    knobs,
                    work / "head.log",
                )
            )
            address = nodes[0].address()
            _wait_for_nodes(address, 1)
            (knobs / "trivial").write_text("1")
            ours(args.bin, address, work, 50, args.parallelism)  # warm-up: workers started
            results["rounds"] = []
            for round_ in range(max(args.rounds, 1)):
                measured = {"ours": ours(args.bin, address, work, args.trials, args.parallelism)}
                samples = args.tune_samples if round_ == 0 else 0
                measured.update(
                    plain_and_tune(address, args.trials, args.parallelism, samples, work)
                )
                results["rounds"].append(measured)
            (knobs / "trivial").unlink()
            for node in reversed(nodes):
                node.stop()
            nodes.clear()

            # 2. Scale-out: CPU-bound trials on one 1-CPU node, then on two.
            (knobs / "burn").write_text(str(args.burn))
            nodes.append(
                Node(
                    [
                        "--head",
                        "--port=0",
                        "--num-cpus=1",
                        "--include-dashboard=false",
                        f"--temp-dir={work}/ray2",
                    ],
                    knobs,
                    work / "head2.log",
                )
            )
            address = nodes[0].address()
            _wait_for_nodes(address, 1)
            one = ours(args.bin, address, work, args.burn_trials, 2)
            nodes.append(Node([f"--address={address}", "--num-cpus=1"], knobs, work / "n2.log"))
            _wait_for_nodes(address, 2)
            two = ours(args.bin, address, work, args.burn_trials, 2)
            results["burn"] = {"one_node": one, "two_nodes": two, "burn_s": args.burn}
        finally:
            for node in reversed(nodes):
                node.stop()

    n = args.trials
    rounds = [
        {
            "steady": r["ours"]["steady_s"] / n * 1000,
            "total": r["ours"]["wall_s"] / n * 1000,
            "plain": r["plain_s"] / n * 1000,
            "windowed": r["windowed_s"] / n * 1000,
        }
        for r in results["rounds"]
    ]
    for r in rounds:
        r["ratio"] = r["steady"] / r["plain"]
        r["ratio_windowed"] = r["steady"] / r["windowed"]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ours_steady, ours_total = median("steady"), median("total")
    plain, windowed = median("plain"), median("windowed")
    tune_ms = results["rounds"][0]["tune_s"] / args.tune_samples * 1000
    one, two = results["burn"]["one_node"], results["burn"]["two_nodes"]
    rate_one = one["trials"] / one["steady_s"]
    rate_two = two["trials"] / two["steady_s"]
    if len(rounds) > 1:
        window = f"plain {args.parallelism} in flight"
        print(f"rounds ({len(rounds)}): ours steady / plain / {window}, ms; ratios")
        for r in rounds:
            print(
                f"  {r['steady']:6.2f} / {r['plain']:5.2f} / {r['windowed']:5.2f}"
                f"   {r['ratio']:5.2f} x / {r['ratio_windowed']:5.2f} x"
            )
    where = "medians of the rounds" if len(rounds) > 1 else "one round"
    print(f"trivial trials, per trial ({n} trials, parallelism {args.parallelism}; {where}):")
    print(f"  ours (ray executor)  {ours_steady:8.2f} ms steady   {ours_total:8.2f} ms total")
    print(f"  plain Ray task       {plain:8.2f} ms")
    print(f"  plain, {args.parallelism:3d} in flight {windowed:8.2f} ms (one sent as one ends)")
    print(f"  Ray Tune             {tune_ms:8.2f} ms ({args.tune_samples} samples)")
    print(f"  ours / plain Ray     {median('ratio'):8.2f} x (goal <= 2)")
    print(f"  ours / plain, window {median('ratio_windowed'):8.2f} x")
    print(f"  Tune / ours          {tune_ms / ours_steady:8.1f} x")
    print(f"CPU-bound trials of {args.burn} s ({args.burn_trials} trials, parallelism 2):")
    print(f"  1 node               {rate_one:8.3f} trials/s")
    print(f"  2 nodes              {rate_two:8.3f} trials/s ({two['nodes']} nodes used)")
    print(f"  2 nodes / 1 node     {rate_two / rate_one:8.2f} x (goal >= 1.8)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
