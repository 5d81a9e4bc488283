"""The Ray executor (studies.ray_executor): sharded attacks merge into exactly the one-process result,
and an --out_dir the workers cannot see is refused with one line. That a study on Ray ends with the
local executor's results, row for row and weight for weight, is shown by tests/test_ray_faults.py,
with workers killed on the way."""
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import copy_run  # noqa: E402
from eval.analyses.attack_suite import engine, store, plan as suite_plan, run as suite_run
from cce_tf.cli_flags import UsageError  # noqa: E402
from studies import ray_executor  # noqa: E402

@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on this machine's 2 cores, for the tests of this module (RayPool leaves a Ray
    it did not start running)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CCE_OFFLINE", "1")     # the tasks get the driver's CCE_* variables
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()



def test_shard_bounds_cover_every_sample_on_batch_boundaries():
    assert suite_plan.shard_bounds(1000, 100, 2) == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    assert suite_plan.shard_bounds(64, 500, 16) == [(0, 64)]          # at least one batch
    assert suite_plan.shard_bounds(64, 32, 1, shard_size=40) == [(0, 64)]  # rounded up to batches
    bounds = suite_plan.shard_bounds(10000, 500, 7)   # 20 batches for 14 shards: one batch each
    assert bounds[0][0] == 0 and bounds[-1][1] == 10000 and all(a % 500 == 0 for a, _ in bounds)
    assert all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:])) and len(bounds) == 20


def test_shards_merge_into_the_one_process_result(tiny_run, tmp_path):
    a, b = copy_run(tiny_run, tmp_path / "a"), copy_run(tiny_run, tmp_path / "b")
    opts = suite_plan.SuiteOptions(attacks=("pgd",), n_samples=64, batch_size=32, nb_iter=2, sanity=False)
    shards = [suite_run.shard_mask(a, opts, "pgd", start, stop) for start, stop in ((0, 32), (32, 64))]
    merged = np.concatenate(shards)

    plans, test_sets = suite_plan.plan_runs([a], opts)
    x, y = test_sets["fashion_mnist"]
    params, n = plans[0].attacks["pgd"]
    whole = engine.robust_mask(plans[0].model, "pgd", x[:64], y[:64], params, 32, seed=opts.seed)
    assert n == 64 and merged.shape == (64,)
    np.testing.assert_array_equal(merged, whole)

    suite_run.evaluate([a], opts, merged={"pgd": (merged, 1.5)})
    suite_run.evaluate([b], opts)
    got, want = store.read_results(a), store.read_results(b)
    assert got["attacks"]["pgd"]["robust_accuracy"] == want["attacks"]["pgd"]["robust_accuracy"]
    assert got["attacks"]["pgd"]["seconds"] == 1.5
    assert got["attacks"]["pgd"]["settings"] == want["attacks"]["pgd"]["settings"]
    np.testing.assert_array_equal(store.read_masks(a)["pgd"], store.read_masks(b)["pgd"])


def test_an_out_dir_the_driver_cannot_read_back_is_refused(local_ray, tmp_path, monkeypatch):
    ray_executor.check_visible(str(tmp_path))           # shared here: passes, and cleans up
    monkeypatch.chdir(tmp_path.parent)
    ray_executor.check_visible(tmp_path.name)           # relative to the driver's directory
    assert os.listdir(tmp_path) == []
    # The workers' files never reach the driver (its reader sees nothing), as on node-local disks.
    monkeypatch.setattr(ray_executor, "_read_text", lambda path: None)
    with pytest.raises(UsageError) as e:
        ray_executor.check_visible(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"--out_dir {tmp_path} is not visible from the Ray workers (")
    assert "which the driver cannot read" in msg and msg.endswith("): use storage every node mounts")


def test_an_out_dir_the_workers_cannot_see_is_refused(tmp_path):
    elsewhere = tmp_path / "node_disk"        # what a node sees at the same path: another disk
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()

    def probes(cwd, out_dir, driver_file, token, probe_id):
        path = str(elsewhere / f".ray_probe_{probe_id}_node1")
        with open(path, "w") as f:
            f.write(token + "10.0.0.7")
        return [{"node": "10.0.0.7", "read": ray_executor._read_text(str(elsewhere / driver_file)),
                 "wrote": path, "error": None}]

    with pytest.raises(UsageError, match=r"^--out_dir .*/out is not visible from the Ray workers \(a task on "
                                         r"node 10\.0\.0\.7 cannot read .*which the driver wrote\): use storage"):
        ray_executor.check_visible(str(out), run_probes=probes)
    assert os.listdir(out) == []              # the driver's probe file is removed either way
